#!/usr/bin/env bash
# The demo: the local AWS test server seeded with sample data (two accounts, two
# regions; one account close to its standard-parameter limit, one repository close to
# its image limit, an account with many buckets), every exporter against it, and
# a Prometheus that scrapes them with the project's alert rules.
# Ctrl-C stops everything this script started.
#
# Ports: AWS_PORT (default 4566), PROM_PORT (default 9090), and for each exporter
# <NAME>_PORT, NAME being its crate's directory under exporters/ (SSM_PORT, ECR_PORT,
# S3_PORT, ...); an exporter without one listens on its own default port.
# `scripts/demo.sh --list-exporters` prints the exporters it starts, one
# "name binary port" a line, and exits (tests/test_exporter_list.py reads it).
set -euo pipefail
cd "$(dirname "$0")/.."

AWS_PORT=${AWS_PORT:-4566}
PROM_PORT=${PROM_PORT:-9090}
list_only=false
[ "${1:-}" = "--list-exporters" ] && list_only=true

$list_only || scripts/setup.sh
if [ -n "${HEADROOM_BIN_DIR:-}" ]; then
  bin=$HEADROOM_BIN_DIR  # binaries built already (the test suite runs the demo this way)
else
  echo "demo: building the exporters (the first build takes a few minutes)" >&2
  # The same build as `make test` (scripts/test.sh): the tests' dev-dependencies change
  # some crates' features, so a --bins build would rebuild what the tests built.
  cargo build --locked --workspace --all-targets >&2
  bin=target/debug
fi

# Every exporter crate, so that none is missed: its name (the directory), its binary
# (the [[bin]] name in its Cargo.toml) and its port ($<NAME>_PORT, else the default
# its --help shows for --web.listen-address).
exporters=()
for crate in exporters/*/; do
  name=$(basename "$crate")
  binary=$(sed -n '/^\[\[bin\]\]/,/^\[/ s/^name *= *"\([^"]*\)".*/\1/p' "$crate/Cargo.toml")
  var=$(printf '%s_PORT' "$name" | tr 'a-z-' 'A-Z_')
  help=$("$bin/$binary" --help)
  default=$(sed -n '/--web.listen-address/,$ { /\[default: /{ s/.*\[default: [^]]*:\([0-9][0-9]*\)\].*/\1/p; q; } }' <<<"$help")
  port=${!var:-$default}
  [ -n "$binary" ] && [ -n "$port" ] || { echo "demo: cannot tell the binary or port of $crate" >&2; exit 1; }
  exporters+=("$name $binary $port")
done
if $list_only; then
  printf '%s\n' "${exporters[@]}"
  exit 0
fi

# Every port must be free before anything starts: the demo shows numbers only from the
# processes it started, never from another program on a port it wanted.
port_free() { # port variable
  if ! .venv/bin/python - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
  then
    echo "demo: port $1 is already in use by another program; set $2 to a free port" >&2
    exit 1
  fi
}
port_free "$AWS_PORT" AWS_PORT
port_free "$PROM_PORT" PROM_PORT
for exp in "${exporters[@]}"; do
  read -r name _ port <<<"$exp"
  port_free "$port" "$(printf '%s_PORT' "$name" | tr 'a-z-' 'A-Z_')"
done

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

logdir=$(mktemp -d)
.venv/bin/python -m testserver.headroom_aws --port "$AWS_PORT" --seed demo >"$logdir/aws.out" 2>"$logdir/aws.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q READY "$logdir/aws.out" 2>/dev/null && break; sleep 0.2; done
grep -q READY "$logdir/aws.out" || { echo "demo: the test server did not start:"; cat "$logdir/aws.err"; exit 1; }

export AWS_ENDPOINT_URL="http://127.0.0.1:$AWS_PORT" AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo \
  AWS_REGION=eu-west-1 AWS_EC2_METADATA_DISABLED=true
# Waits until `url` answers 200 while process `pid` (named `what`, logging to `log`)
# is alive; stops the demo, showing the log, if it exits first or never answers.
wait_for() { # pid what url log
  for _ in $(seq 1 300); do
    kill -0 "$1" 2>/dev/null || { echo "demo: $2 exited; its log ($4):" >&2; tail -n 20 "$4" >&2; exit 1; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$3")" = 200 ] && return 0
    sleep 0.2
  done
  echo "demo: $2 did not answer $3 within a minute; its log: $4" >&2
  exit 1
}
declare -A pid_of
for exp in "${exporters[@]}"; do
  read -r name binary port <<<"$exp"
  "$bin/$binary" --config.file=examples/demo.yml --web.listen-address="127.0.0.1:$port" 2>"$logdir/$name.log" &
  pids+=($!)
  pid_of[$name]=$!
done
for exp in "${exporters[@]}"; do
  read -r name binary port <<<"$exp"
  wait_for "${pid_of[$name]}" "$binary" "http://127.0.0.1:$port/readyz" "$logdir/$name.log"
done
ready_at=$(date +%s.%N)  # every exporter has its data: a scrape from now on carries it

# Prometheus with the rules of alerts/ (not their unit tests), scraping every 5s.
mkdir -p "$logdir/prometheus"
{
  echo "global: {scrape_interval: 5s, evaluation_interval: 5s}"
  echo "rule_files:"
  for f in alerts/*.yml; do case "$f" in *.test.yml) ;; *) echo "  - $PWD/$f" ;; esac; done
  echo "scrape_configs:"
  for exp in "${exporters[@]}"; do
    read -r name _ port <<<"$exp"
    echo "  - {job_name: $name, static_configs: [{targets: ['127.0.0.1:$port']}]}"
  done
} >"$logdir/prometheus.yml"
prometheus --config.file="$logdir/prometheus.yml" --storage.tsdb.path="$logdir/prometheus" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$logdir/prometheus.log" 2>&1 &
pids+=($!)
wait_for "$!" Prometheus "http://127.0.0.1:$PROM_PORT/-/ready" "$logdir/prometheus.log"

echo
echo "headroom demo is running (logs in $logdir)"
printf '  %-22s %s\n' "AWS test server" "http://127.0.0.1:$AWS_PORT"
for exp in "${exporters[@]}"; do
  read -r _ binary port <<<"$exp"
  printf '  %-22s %s\n' "$binary" "http://127.0.0.1:$port/metrics"
done
printf '  %-22s %s\n' "Prometheus" "http://127.0.0.1:$PROM_PORT/alerts  (alert rules: alerts/headroom.rules.yml)"
echo
echo "Usage against limits (the fullest first):"
for exp in "${exporters[@]}"; do
  read -r _ _ port <<<"$exp"
  curl -s "http://127.0.0.1:$port/metrics"
done | .venv/bin/python scripts/top_quotas.py 12
echo
# The quota alerts wait 15 minutes before firing; they are pending within seconds:
# once every exporter has been scraped and every rule group evaluated on that (the
# quota alerts after the recording rules they read), every target's alerts are in.
# Bounded: a clear message and exit 1 rather than a demo that hangs or shows half.
wait_args=(--prometheus "http://127.0.0.1:$PROM_PORT" --since "$ready_at" --timeout 120 --logs "$logdir")
for exp in "${exporters[@]}"; do
  read -r _ _ port <<<"$exp"
  wait_args+=(--target "http://127.0.0.1:$port/metrics")
done
for p in "${pids[@]}"; do wait_args+=(--pid "$p"); done
.venv/bin/python scripts/wait_for_alerts.py "${wait_args[@]}" || exit
# Still ours, all of them, before showing what they serve.
for p in "${pids[@]}"; do
  kill -0 "$p" 2>/dev/null || { echo "demo: a process it started has exited (logs in $logdir)" >&2; exit 1; }
done
echo "Alerts in Prometheus (pending for 15m before they fire; the watchdog always fires):"
curl -s "http://127.0.0.1:$PROM_PORT/api/v1/alerts" | .venv/bin/python scripts/show_alerts.py
echo
echo "Press Ctrl-C to stop."
wait
