#!/usr/bin/env bash
# The whole test suite: provision the real-service rig (idempotent), check formatting and
# lints, then run unit and integration tests against the rig.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then bash scripts/rig.sh up; else sudo bash scripts/rig.sh up; fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test (unit + integration)"
cargo test --all-targets --locked -- --test-threads "${SP_TEST_THREADS:-4}"
