#!/usr/bin/env bash
# Builds the release binaries and prints every benchmark's figures.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --locked --workspace --release --bins
.venv/bin/python bench/ssm_refresh.py
.venv/bin/python bench/ecr_refresh.py
# Scrape cost for large snapshots. To compare with another build in the same run:
#   git worktree add /tmp/baseline <rev> && (cd /tmp/baseline && cargo build --release -p ecr-quota-exporter)
#   .venv/bin/python bench/scrape.py --baseline-bin /tmp/baseline/target/release
.venv/bin/python bench/scrape.py
# Hostile clients: wrong-password flood, unknown users, silent connections.
.venv/bin/python bench/web_limits.py --bin-dir target/release
# Account discovery: 1,000 accounts of an organisation x 2 regions.
.venv/bin/python bench/organizations.py --bin-dir target/release
