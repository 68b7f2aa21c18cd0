#!/usr/bin/env bash
# Makes sure the PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306) servers the SQL
# tests use are answering. On the project's machines both run before a session starts; this
# starts them with the machine's own commands when a port does not answer. Idempotent.
set -euo pipefail

log() { printf 'databases.sh: %s\n' "$*" >&2; }

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  log "$name did not come up"; return 1
}

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  log "starting PostgreSQL"
  cluster=$(ls /etc/postgresql 2>/dev/null | head -n1)
  [ -n "$cluster" ] || { log "PostgreSQL is not installed (apt-get install postgresql)"; exit 1; }
  pg_ctlcluster --skip-systemctl-redirect "$cluster" main start
  wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
fi
psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null

if ! mariadb-admin -h 127.0.0.1 -P 3306 -uroot ping >/dev/null 2>&1; then
  log "starting MariaDB"
  [ -x /usr/sbin/mariadbd ] || { log "MariaDB is not installed (apt-get install mariadb-server)"; exit 1; }
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_for MariaDB mariadb-admin -h 127.0.0.1 -P 3306 -uroot ping
fi
mariadb -h 127.0.0.1 -P 3306 -uroot -e "CREATE DATABASE IF NOT EXISTS test" >/dev/null
