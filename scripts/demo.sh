#!/usr/bin/env bash
# Builds the addon (release) and runs the demo on embedded defaults (no servers needed).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3db-replicator/target}"
if [ ! -d node_modules/s3db.js ]; then npm install --ignore-scripts --no-audit --no-fund; fi
npx napi build --platform --release --esm
node examples/demo.mjs "$@"
