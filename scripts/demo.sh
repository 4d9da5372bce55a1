#!/usr/bin/env bash
# The main job on the embedded default: a fresh project with the six default
# arenas, an SQLite ledger and no provider. It validates the definitions,
# renders production's configuration, registers a release, approves it, runs
# production's window and approval gates on Black Friday, locks and unlocks
# production; then, on two local arenas (copilot-service processes behind
# local routers), deploys and promotes releases through blue-green steps with
# gates and analysis, watches a broken release get rolled back automatically,
# rolls back by hand, and stops everything. Last, a preview of pull request
# 7 on the local provider: its own processes and port, seeded with the
# fixture feeds, its gates run; listed, then removed.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --bin copilot --bin copilot-service
copilot() { ./target/debug/copilot --root "$demo" "$@"; }
step() { printf '\n\033[1m$ copilot %s\033[0m\n' "$*"; copilot "$@"; }

demo=$(mktemp -d -t copilot-demo.XXXXXX)
trap 'copilot down local --force >/dev/null 2>&1 || true; rm -rf "$demo"' EXIT

step init "$demo"
step validate
step arenas list
step arenas show production
step render production --image ghcr.io/acme/copilot-service:v1.0.0
step release create --image ghcr.io/acme/copilot-service:v1.0.0 --git-sha 4f2c1a9
step approve production --release v1.0.0 --note "QA signed off"
printf '\n\033[1m$ COPILOT_NOW=2026-11-27T11:00:00Z copilot gate run production --gate window --gate approval\033[0m   (Black Friday: expected exit 1)\n'
set +e; COPILOT_NOW=2026-11-27T11:00:00Z copilot gate run production --gate window --gate approval --release v1.0.0; code=$?; set -e
echo "exit code: $code"
step lock production --reason "demo: incident 42 under investigation"
printf '\n\033[1m$ copilot lock production --reason "second operator"\033[0m   (expected: exit 4)\n'
set +e; COPILOT_ACTOR=other-operator copilot lock production --reason "second operator"; code=$?; set -e
echo "exit code: $code"
step unlock production --reason "incident resolved"

# The local arenas: copilot-service processes behind the local routers.
# `stage` is a second local arena that promotes from `local` with blue-green
# steps 10 -> 50 -> 100 and analysis; --bake shortens every bake for the demo.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port); stage_port=$(free_port)
sed -i "s/port: 7400/port: $port/; s#127.0.0.1:7400#127.0.0.1:$port#" "$demo/arenas/local.yaml"
cat > "$demo/arenas/stage.yaml" <<YAML
name: stage
tier: staging
promotes_from: local
provider: { kind: local, port: $stage_port }
strategy:
  kind: blue-green
  steps: [{ weight: 10, bake: 5m }, { weight: 50, bake: 10m }, { weight: 100, bake: 10m }]
  analysis:
    interval: 30s
    min_samples: 20
    metrics:
      - { name: error_rate, max: 0.05, window: 5m, on_fail: rollback }
      - { name: p95_latency, max: 3s, window: 5m, on_fail: alert }
      - { name: health, path: /health, consecutive_failures: 3, on_fail: remove }
      # Read from the service's own /metrics; recorded, never acted on.
      - { name: p99_latency, source: metrics, max: 2s, on_fail: alert, dry_run: true }
gates:
  after: [health, smoke]
env:
  values: { APP_URL: "http://127.0.0.1:$stage_port", SHOPIFY_API_VERSION: "2026-10", DATABASE_URL: "sqlite://.copilot/local/stage.db" }
YAML
trap 'copilot down stage --force >/dev/null 2>&1 || true; copilot down local --force >/dev/null 2>&1 || true; rm -rf "$demo"' EXIT
step release create --image copilot-service:v1.1.0
step release create --image copilot-service:v1.2.0-broken --env COPILOT_FAULT_5XX_RATE=0.3
step deploy local --release v1.0.0
step promote local stage --yes --bake 1s
step deploy local --release v1.1.0
step promote local stage --yes --bake 1s
printf '\n$ curl http://127.0.0.1:%s/health\n' "$stage_port"; curl -s "http://127.0.0.1:$stage_port/health"; echo
step deploy local --release v1.2.0-broken
printf '\n\033[1m$ copilot promote local stage --yes --bake 1s\033[0m   (v1.2.0-broken answers 5xx: analysis rolls it back, exit 1)\n'
set +e; copilot promote local stage --yes --bake 1s; code=$?; set -e
echo "exit code: $code"
step rollback stage --reason "demo: back to the previous release"
printf '\n$ curl http://127.0.0.1:%s/health\n' "$stage_port"; curl -s "http://127.0.0.1:$stage_port/health"; echo
step status stage
step history stage
step unlock stage --reason "demo over"
step down stage
step down local

# A preview per pull request. The default preview arena runs on Render; the
# demo's runs on the local provider, seeded with the fixture feeds.
cat > "$demo/arenas/preview.yaml" <<'YAML'
name: preview
tier: preview
provider: { kind: local }
strategy: { kind: immediate }
preview:
  ttl: 72h
  name: copilot-pr-{pr}
  seed:
    google-search-status: fixtures/feeds/google-search-incidents.json
    shopify-changelog: fixtures/feeds/shopify-changelog.rss
gates:
  before: [env]
  after: [health]
env:
  required: [APP_URL, DATABASE_URL]
  values:
    APP_URL: "http://127.0.0.1:{port}"
    DATABASE_URL: "sqlite://.copilot/local/{arena}/service.db"
    SHOPIFY_API_VERSION: "2026-10"
    # The seeded core update is rolling out on this date.
    COPILOT_NOW: "2026-11-20T12:00:00Z"
YAML
trap 'copilot preview down --pr 7 >/dev/null 2>&1 || true; copilot down stage --force >/dev/null 2>&1 || true; copilot down local --force >/dev/null 2>&1 || true; rm -rf "$demo"' EXIT
step preview up --pr 7 --release v1.1.0
preview_url=$(copilot --output json preview list | python3 -c 'import json, sys; print(json.load(sys.stdin)["previews"][0]["url"])')
printf '
$ curl %s/api/recommendations?shop=review.myshopify.com   (from the seeded feeds)
' "$preview_url"
curl -s "$preview_url/api/recommendations?shop=review.myshopify.com" | python3 -c 'import json, sys
for r in json.load(sys.stdin)["recommendations"][:3]:
    print("  [" + r["severity"] + "] " + r["title"])'
step preview list
step preview down --pr 7
