#!/usr/bin/env bash
# Parses the Prometheus text exposition format read from stdin with the reference parser (the
# official Python client, prometheus_client, from PyPI) and prints the metric families as JSON:
#   [{ "name", "type", "help", "samples": [{ "name", "labels": {...}, "value" }] }]
# A counter's family name is without `_total` (the client's convention), its samples keep it.
# Used by __test__/metrics.test.mjs to check plugin.metrics() with a real parser.
#
#   scripts/tools/prometheus-parse.sh < metrics.txt
#   scripts/tools/prometheus-parse.sh --install     # only install (idempotent; test.sh runs it)
#
# The client goes into a venv under
# ${S3DB_REPLICATOR_SERVICES:-$HOME/.cache/s3db-replicator/services}/prometheus-client, once.
set -euo pipefail

VERSION="0.26.0"
SVC="${S3DB_REPLICATOR_SERVICES:-$HOME/.cache/s3db-replicator/services}"
DIR="$SVC/prometheus-client"
VENV="$DIR/venv"

log() { printf 'prometheus-parse.sh: %s\n' "$*" >&2; }

if ! "$VENV/bin/python" -c "import sys; from importlib.metadata import version; sys.exit(version('prometheus_client') != '$VERSION')" 2>/dev/null; then
  mkdir -p "$DIR"
  log "installing prometheus_client $VERSION into $VENV (once)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "prometheus_client==$VERSION" >"$DIR/pip.log" 2>&1 || {
    log "pip install failed; see $DIR/pip.log"; tail -20 "$DIR/pip.log" >&2; exit 1; }
fi
if [ "${1:-}" = "--install" ]; then exit 0; fi

exec "$VENV/bin/python" -c '
import json, sys
from prometheus_client.parser import text_string_to_metric_families

families = []
for f in text_string_to_metric_families(sys.stdin.read()):
    families.append({
        "name": f.name, "type": f.type, "help": f.documentation,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples],
    })
json.dump(families, sys.stdout)
'
