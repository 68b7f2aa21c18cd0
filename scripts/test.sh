#!/usr/bin/env bash
# The full test suite, as CI runs it: installs what the tests need (idempotently), builds the
# addon, then runs every test: rustfmt/clippy checks, the engine's cargo tests and the
# node --test suites inside a real s3db.js Database.
set -euo pipefail
cd "$(dirname "$0")/.."
# A cargo target directory outside the clone is a cache between runs; a cold one works too.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/s3db-replicator/target}"

step() { printf '\n== %s\n' "$*"; }

step "npm dependencies"
# `npm install`, not `npm ci`: s3db.js lists optional dependencies that this registry does not
# have, which `npm ci` treats as a lock mismatch. The lock file still pins every version.
if [ ! -d node_modules/s3db.js ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm install --ignore-scripts --no-audit --no-fund
fi

step "test services (PostgreSQL, MariaDB, libSQL server, AWS-compatible server, MongoDB-wire server, BigQuery emulator, NATS JetStream on loopback)"
./scripts/services/databases.sh
./scripts/services/sqld.sh
./scripts/services/moto.sh
./scripts/services/mongodb.sh
./scripts/services/bigquery.sh
# The JetStream tests start their own nats-server with this binary (installed here when missing).
./scripts/services/nats.sh >/dev/null

step "the Prometheus reference parser (prometheus_client, for the metrics test)"
./scripts/tools/prometheus-parse.sh --install

step "rustfmt and clippy"
cargo fmt --all -- --check
cargo clippy --no-default-features --features testing --all-targets -- -D warnings
cargo clippy --lib -- -D warnings

step "engine tests (cargo, no Node-API)"
cargo test --no-default-features --features testing

step "build the addon (debug)"
npx napi build --platform --esm
# The generated bindings are committed: a build must not change them.
git diff --exit-code -- index.js index.d.ts || { echo "index.js/index.d.ts are stale: commit the regenerated files"; exit 1; }

step "node tests (real s3db.js)"
node --test --test-concurrency=2 __test__/
