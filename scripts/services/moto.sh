#!/usr/bin/env bash
# Starts a local AWS-compatible server (moto: S3, SQS, DynamoDB) for the AWS drivers' tests,
# idempotently.
#
#   scripts/services/moto.sh          # start (no-op when it already answers)
#   scripts/services/moto.sh stop     # stop the server this script started
#
# Listens on loopback only, at http://127.0.0.1:${MOTO_PORT:-45660} (any static key/secret,
# region us-east-1). moto comes from PyPI into a venv under
# ${S3DB_REPLICATOR_SERVICES:-$HOME/.cache/s3db-replicator/services}/moto, installed once.
# State is in memory only; tests use unique queue, table and bucket names.
set -euo pipefail

MOTO_VERSION="5.2.5"
PORT="${MOTO_PORT:-45660}"
URL="http://127.0.0.1:${PORT}"
SVC="${S3DB_REPLICATOR_SERVICES:-$HOME/.cache/s3db-replicator/services}"
DIR="$SVC/moto"
VENV="$DIR/venv"
PID_FILE="$DIR/moto-$PORT.pid"
LOG_FILE="$DIR/moto-$PORT.log"

log() { printf 'moto.sh: %s\n' "$*" >&2; }

healthy() {
  if command -v curl >/dev/null 2>&1; then
    curl -sf -m 2 -o /dev/null "$URL/moto-api/"
  else
    node -e "fetch(process.argv[1],{signal:AbortSignal.timeout(2000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))" "$URL/moto-api/"
  fi
}

if [ "${1:-}" = "stop" ]; then
  if [ -f "$PID_FILE" ]; then kill "$(cat "$PID_FILE")" 2>/dev/null || true; rm -f "$PID_FILE"; fi
  exit 0
fi

if healthy; then exit 0; fi

mkdir -p "$DIR"
if [ ! -x "$VENV/bin/moto_server" ] || ! "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  log "installing moto $MOTO_VERSION into $VENV (once)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" >"$DIR/pip.log" 2>&1 || {
    log "pip install failed; see $DIR/pip.log"; tail -20 "$DIR/pip.log" >&2; exit 1; }
fi
log "starting moto on $URL"
nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$LOG_FILE" 2>&1 &
echo $! >"$PID_FILE"
for _ in $(seq 120); do
  if healthy; then exit 0; fi
  if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then log "moto exited; see $LOG_FILE"; tail -20 "$LOG_FILE" >&2; exit 1; fi
  sleep 0.5
done
log "moto did not answer on $URL; see $LOG_FILE"
exit 1
