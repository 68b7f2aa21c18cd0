#!/usr/bin/env bash
# Makes sure a NATS server with JetStream answers for the JetStream outbox tests, idempotently.
#
#   scripts/services/nats.sh          # start (no-op when one already answers)
#   scripts/services/nats.sh stop     # stop the server this script started
#
# Prints the server's URL on stdout: nats://127.0.0.1:4222 when the machine's own server answers
# there with JetStream on, else this project's own server on nats://127.0.0.1:${NATS_PORT:-45422}
# (started here, store and log under ${S3DB_REPLICATOR_SERVICES:-$HOME/.cache/s3db-replicator/services}/nats).
# The binary is Debian's `nats-server` package (installed with apt-get when missing), or
# $NATS_SERVER_BIN. The tests that restart a server start their own with the same binary
# (`nats.sh --bin` prints its path, installing openssl too: the TLS test makes its certificates).
set -euo pipefail

PORT="${NATS_PORT:-45422}"
SVC="${S3DB_REPLICATOR_SERVICES:-$HOME/.cache/s3db-replicator/services}"
DIR="$SVC/nats"
PID_FILE="$DIR/nats-server.pid"
LOG_FILE="$DIR/nats-server.log"

log() { printf 'nats.sh: %s\n' "$*" >&2; }

# The server greets every client with `INFO {...}`; JetStream is on when it says "jetstream":true.
jetstream_answers() {
  timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -n 1 <&3" 2>/dev/null \
    | grep -q '"jetstream":true'
}

apt_install() {
  log "installing Debian's $1 package"
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y "$1" >&2 || { apt-get update >&2 && apt-get install -y "$1" >&2; })
  else
    (sudo apt-get install -y "$1" >&2 || { sudo apt-get update >&2 && sudo apt-get install -y "$1" >&2; })
  fi
}

binary() {
  if [ -n "${NATS_SERVER_BIN:-}" ]; then echo "$NATS_SERVER_BIN"; return; fi
  command -v nats-server 2>/dev/null && return
  [ -x /usr/sbin/nats-server ] && { echo /usr/sbin/nats-server; return; }
  apt_install nats-server
  command -v nats-server 2>/dev/null || echo /usr/sbin/nats-server
}

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  if [ -r "/proc/$pid/cmdline" ] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q nats-server; then
    return 1
  fi
  echo "$pid"
}

case "${1:-start}" in
  stop)
    if pid="$(running_pid)"; then kill "$pid" && log "stopped (pid $pid)"; else log "not running"; fi
    rm -f "$PID_FILE"
    exit 0
    ;;
  --bin)
    # The TLS test makes its certificates with openssl.
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    binary
    exit 0
    ;;
esac

if jetstream_answers 4222; then
  echo "nats://127.0.0.1:4222"
  exit 0
fi
if jetstream_answers "$PORT"; then
  echo "nats://127.0.0.1:$PORT"
  exit 0
fi

BIN="$(binary)"
[ -x "$BIN" ] || { log "no nats-server binary (tried \$NATS_SERVER_BIN, PATH, /usr/sbin)"; exit 1; }
mkdir -p "$DIR/store"
if ! pid="$(running_pid)"; then
  log "starting $BIN -js on 127.0.0.1:$PORT (log: $LOG_FILE)"
  rm -f "$PID_FILE"
  SETSID="$(command -v setsid || true)"
  $SETSID nohup sh -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
    "$BIN" -js -a 127.0.0.1 -p "$PORT" -sd "$DIR/store" \
    >>"$LOG_FILE" 2>&1 </dev/null &
  for _ in $(seq 1 40); do
    pid="$(running_pid)" && break
    sleep 0.05
  done
  [ -n "${pid:-}" ] || { log "nats-server did not start; see $LOG_FILE"; tail -n 20 "$LOG_FILE" >&2 || true; exit 1; }
fi
for _ in $(seq 1 80); do
  if jetstream_answers "$PORT"; then
    log "ready at nats://127.0.0.1:$PORT (pid $pid)"
    echo "nats://127.0.0.1:$PORT"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || { log "nats-server exited:"; tail -n 20 "$LOG_FILE" >&2 || true; rm -f "$PID_FILE"; exit 1; }
  sleep 0.25
done
log "nats-server did not answer within 20 s:"
tail -n 20 "$LOG_FILE" >&2 || true
exit 1
