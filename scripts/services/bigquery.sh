#!/usr/bin/env bash
# Starts a local BigQuery REST emulator (bqemulator, DuckDB storage) for the `bigquery`
# driver's tests, idempotently.
#
#   scripts/services/bigquery.sh          # start (no-op when it already answers)
#   scripts/services/bigquery.sh stop     # stop the server this script started
#
# Listens on loopback only: REST at http://127.0.0.1:${BIGQUERY_PORT:-45680} (the Google API
# paths under /bigquery/v2), gRPC on the next port. bqemulator comes from PyPI into a venv under
# ${S3DB_REPLICATOR_SERVICES:-$HOME/.cache/s3db-replicator/services}/bigquery, installed once.
# Its startup `INSTALL spatial` downloads from the DuckDB extension site, which is fatal offline:
# the launcher below skips it (GEOGRAPHY / ST_* are then unavailable; the driver does not use
# them). Data is in memory only (--ephemeral); tests use unique dataset names.
set -euo pipefail

BQEMULATOR_VERSION="1.4.0"
DUCKDB_VERSION="2.0.1"
PORT="${BIGQUERY_PORT:-45680}"
GRPC_PORT="$((PORT + 1))"
URL="http://127.0.0.1:${PORT}"
SVC="${S3DB_REPLICATOR_SERVICES:-$HOME/.cache/s3db-replicator/services}"
DIR="$SVC/bigquery"
VENV="$DIR/venv"
PID_FILE="$DIR/bigquery-$PORT.pid"
LOG_FILE="$DIR/bigquery-$PORT.log"

log() { printf 'bigquery.sh: %s\n' "$*" >&2; }

healthy() { curl -sf -o /dev/null --max-time 2 "$URL/healthz"; }

if [ "${1:-}" = "stop" ]; then
  if [ -f "$PID_FILE" ]; then kill "$(cat "$PID_FILE")" 2>/dev/null || true; rm -f "$PID_FILE"; fi
  exit 0
fi

installed() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "
import sys, importlib.metadata as m, numpy
sys.exit(m.version('bqemulator') != '$BQEMULATOR_VERSION' or m.version('duckdb') != '$DUCKDB_VERSION')" 2>/dev/null
}

if installed && healthy; then exit 0; fi

mkdir -p "$DIR"
if ! installed; then
  log "installing bqemulator $BQEMULATOR_VERSION (DuckDB $DUCKDB_VERSION) into $VENV (once)"
  python3 -m venv "$VENV"
  # numpy is an undeclared runtime dependency of bqemulator.
  "$VENV/bin/pip" install -q --disable-pip-version-check "bqemulator==$BQEMULATOR_VERSION" "duckdb==$DUCKDB_VERSION" numpy >"$DIR/pip.log" 2>&1 || {
    log "pip install failed; see $DIR/pip.log"; tail -20 "$DIR/pip.log" >&2; exit 1; }
fi
if healthy; then exit 0; fi
log "starting bqemulator on $URL"
nohup "$VENV/bin/python" -c 'import sys, bqemulator.storage.engine as e
e.DuckDBEngine._load_spatial = lambda self: None
from bqemulator.cli import main; sys.argv[0] = "bqemulator"; sys.exit(main())' \
  start --rest-host 127.0.0.1 --rest-port "$PORT" --grpc-host 127.0.0.1 --grpc-port "$GRPC_PORT" \
  --ephemeral --project test-proj --log-format console --log-level warning >"$LOG_FILE" 2>&1 &
echo $! >"$PID_FILE"
# It takes 4-8 s to start.
for _ in $(seq 120); do
  if healthy; then exit 0; fi
  if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then log "bqemulator exited; see $LOG_FILE"; tail -20 "$LOG_FILE" >&2; exit 1; fi
  sleep 0.5
done
log "bqemulator did not answer on $URL; see $LOG_FILE"
exit 1
