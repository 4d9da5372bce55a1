#!/usr/bin/env bash
# The main job on the embedded default: a fresh project with the six default
# arenas, an SQLite ledger and no provider. It validates the definitions,
# renders production's configuration, registers a release, approves it, runs
# production's window and approval gates on Black Friday, locks and unlocks
# production, then deploys two releases to the local arena (copilot-service
# processes behind the local router), runs its health gate, shows status and
# history, and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --bin copilot --bin copilot-service
copilot() { ./target/debug/copilot --root "$demo" "$@"; }
step() { printf '\n\033[1m$ copilot %s\033[0m\n' "$*"; copilot "$@"; }

demo=$(mktemp -d -t copilot-demo.XXXXXX)
trap 'copilot down local >/dev/null 2>&1 || true; rm -rf "$demo"' EXIT

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

# The local arena: copilot-service processes behind the local router.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 7400)
sed -i "s/port: 7400/port: $port/; s#127.0.0.1:7400#127.0.0.1:$port#" "$demo/arenas/local.yaml"
step release create --image copilot-service:v1.1.0
step deploy local --release v1.0.0
printf '\n$ curl http://127.0.0.1:%s/health\n' "$port"; curl -s "http://127.0.0.1:$port/health"; echo
step gate run local --phase after
step deploy local --release v1.1.0
printf '\n$ curl http://127.0.0.1:%s/health\n' "$port"; curl -s "http://127.0.0.1:$port/health"; echo
step status local
step history
step down local
