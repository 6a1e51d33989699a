#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, lints, one debug build shared by every
# test, the Rust tests, then the integration tests against the local AWS test server,
# promtool and the exporter binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo build"
cargo build --locked --workspace --all-targets
echo "== cargo test"
HEADROOM_PYTHON="$PWD/.venv/bin/python" cargo test --locked --workspace
echo "== integration tests"
# The suite compares with the golden files and never writes them (`make golden` does).
env -u UPDATE_GOLDEN HEADROOM_BIN_DIR="$PWD/target/debug" .venv/bin/pytest -q -p no:cacheprovider tests
