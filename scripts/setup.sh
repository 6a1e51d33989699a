#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh machine:
#   - Debian: prometheus (for promtool and a real Prometheus server)
#   - a Python virtualenv in .venv with the pinned test server and test runner
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian package starts a Prometheus service we do not want; tests run their own.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop prometheus prometheus-node-exporter >/dev/null 2>&1 || true; fi
  pkill -x prometheus >/dev/null 2>&1 || true
  pkill -f prometheus-node-exporter >/dev/null 2>&1 || true
fi

stamp=.venv/.requirements.sha
want=$(sha256sum testserver/requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: creating .venv with testserver/requirements.txt"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r testserver/requirements.txt
  echo "$want" > "$stamp"
fi
