#!/usr/bin/env bash
# The test suite on a fresh machine: start PostgreSQL and Redis, install the
# real bullmq npm package for the interop tests, then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
if ! command -v node >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
npm ci --prefix tests/bullmq --no-audit --no-fund --loglevel=error
cargo test --locked "$@"
