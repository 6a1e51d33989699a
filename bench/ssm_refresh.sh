#!/usr/bin/env bash
# Builds the release binaries and prints the SSM exporter's figures (see ssm_refresh.py).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked --bins
.venv/bin/python bench/ssm_refresh.py "$@"
