#!/usr/bin/env bash
# Starts a local MongoDB-wire server (SecantusDB) for the `mongodb` driver's tests,
# idempotently.
#
#   scripts/services/mongodb.sh          # start (no-op when it already answers)
#   scripts/services/mongodb.sh stop     # stop the server this script started
#
# Listens on loopback only, at mongodb://127.0.0.1:${MONGODB_PORT:-45670}/?directConnection=true
# (standalone, no auth). SecantusDB and pymongo (the node tests read back with it) come from
# PyPI into a venv under ${S3DB_REPLICATOR_SERVICES:-$HOME/.cache/s3db-replicator/services}/mongodb,
# installed once. Data is in memory only; tests use unique database and collection names.
set -euo pipefail

SECANTUS_VERSION="0.7.0b3"
PORT="${MONGODB_PORT:-45670}"
URL="mongodb://127.0.0.1:${PORT}/?directConnection=true"
SVC="${S3DB_REPLICATOR_SERVICES:-$HOME/.cache/s3db-replicator/services}"
DIR="$SVC/mongodb"
VENV="$DIR/venv"
PID_FILE="$DIR/mongodb-$PORT.pid"
LOG_FILE="$DIR/mongodb-$PORT.log"

log() { printf 'mongodb.sh: %s\n' "$*" >&2; }

healthy() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "
import sys, pymongo
pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=1000).admin.command('ping')" "$URL" >/dev/null 2>&1
}

if [ "${1:-}" = "stop" ]; then
  if [ -f "$PID_FILE" ]; then kill "$(cat "$PID_FILE")" 2>/dev/null || true; rm -f "$PID_FILE"; fi
  exit 0
fi

installed() {
  [ -x "$VENV/bin/secantusd-py" ] && "$VENV/bin/python" -c "
import sys, importlib.metadata as m, pymongo
sys.exit(m.version('SecantusDB') != '$SECANTUS_VERSION')" 2>/dev/null
}

if installed && healthy; then exit 0; fi

mkdir -p "$DIR"
if ! installed; then
  log "installing SecantusDB $SECANTUS_VERSION and pymongo into $VENV (once)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "SecantusDB==$SECANTUS_VERSION" pymongo >"$DIR/pip.log" 2>&1 || {
    log "pip install failed; see $DIR/pip.log"; tail -20 "$DIR/pip.log" >&2; exit 1; }
fi
if healthy; then exit 0; fi
log "starting SecantusDB on $URL"
nohup "$VENV/bin/secantusd-py" --host 127.0.0.1 --port "$PORT" --storage-path :memory: --standalone >"$LOG_FILE" 2>&1 &
echo $! >"$PID_FILE"
for _ in $(seq 120); do
  if healthy; then exit 0; fi
  if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then log "SecantusDB exited; see $LOG_FILE"; tail -20 "$LOG_FILE" >&2; exit 1; fi
  sleep 0.5
done
log "SecantusDB did not answer on $URL; see $LOG_FILE"
exit 1
