#!/usr/bin/env bash
# Builds the release binaries and prints every benchmark's figures.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --locked --workspace --release --bins
.venv/bin/python bench/ssm_refresh.py
.venv/bin/python bench/ecr_refresh.py
