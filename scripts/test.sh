#!/usr/bin/env bash
# The test suite on a fresh machine: start PostgreSQL and Redis, install the
# real bullmq npm package, Stoplight Prism (which holds the emulated platform
# APIs to their official descriptions), moto (AWS), the Kubernetes Python
# client, Alertmanager and Prometheus, then run
# every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh
if ! command -v node >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
# The lock files list every platform's optional packages, so `npm ci`
# installs exactly what they pin on any machine.
for dir in tests/bullmq tests/prism; do
    npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error
done
# moto's server is the AWS the ECS provider's tests run against (ECS, ELBv2,
# CloudWatch, RDS, Secrets Manager), in a virtualenv of its own.
if [ ! -x target/moto/bin/moto_server ]; then
    python3 -m venv target/moto
    target/moto/bin/pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
fi
# The official Kubernetes Python client (35.x speaks 1.35), an independent
# client of the emulated API server the Kubernetes provider's tests run against.
if [ ! -x target/kube-client/bin/python ] || ! target/kube-client/bin/python -c 'import kubernetes' 2>/dev/null; then
    python3 -m venv target/kube-client
    target/kube-client/bin/pip install --quiet --disable-pip-version-check 'kubernetes==35.0.0'
fi
# Alertmanager (alerts gate) and Prometheus (analysis queries); the tests
# start their own instances on loopback.
packages=()
if ! command -v prometheus-alertmanager >/dev/null 2>&1 && ! command -v alertmanager >/dev/null 2>&1; then
    packages+=(prometheus-alertmanager)
fi
command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)
# xmllint validates the published JUnit report.
command -v xmllint >/dev/null 2>&1 || packages+=(libxml2-utils)
if [ ${#packages[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
fi
# The JUnit schema CI systems read (Jenkins xunit's junit-10.xsd), as pytest's
# source distribution on PyPI ships it for its own JUnit tests.
xsd=target/junit-xsd/junit-10.xsd
if [ ! -f "$xsd" ]; then
    tmp=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --no-binary :all: pytest==8.3.4 -d "$tmp"
    tar xzf "$tmp/pytest-8.3.4.tar.gz" -C "$tmp" pytest-8.3.4/testing/example_scripts/junit-10.xsd
    mkdir -p "$(dirname "$xsd")"
    cp "$tmp/pytest-8.3.4/testing/example_scripts/junit-10.xsd" "$xsd"
    rm -rf "$tmp"
fi
export COPILOT_TEST_JUNIT_XSD="$PWD/$xsd"
[ "${COPILOT_TEST_SETUP_ONLY:-}" = 1 ] && exit 0
cargo test --workspace --locked "$@"
# The tests stop what they start: a copilot router or service process of
# this checkout that outlives them is a failure (and is stopped here). One
# asked to stop at the end of the last test gets ten seconds to finish its
# graceful shutdown.
running() { pgrep -af "$PWD/target/[a-z]*/copilot" | grep -v "/deps/" || true; }
for _ in $(seq 1 20); do
    [ -z "$(running)" ] && break
    sleep 0.5
done
survivors=$(running)
if [ -n "$survivors" ]; then
    echo "processes the tests started are still running:" >&2
    echo "$survivors" >&2
    echo "$survivors" | awk '{print $1}' | xargs -r kill -KILL 2>/dev/null || true
    exit 1
fi
