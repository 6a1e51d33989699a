#!/usr/bin/env bash
# The demo: the local AWS test server seeded with sample data (two accounts, two
# regions, one account close to its standard-parameter limit), and the exporter
# against it. Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

AWS_PORT=${AWS_PORT:-4566}
SSM_PORT=${SSM_PORT:-9810}

scripts/setup.sh
echo "demo: building the exporters (the first build takes a few minutes)"
cargo build --locked --workspace --bins

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
target/debug/ssm_quota_exporter --config.file=examples/demo.yml --web.listen-address="127.0.0.1:$SSM_PORT" 2>"$logdir/ssm.log" &
pids+=($!)
for _ in $(seq 1 150); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SSM_PORT/readyz")" = 200 ] && break
  sleep 0.2
done

cat <<TXT

headroom demo is running (logs in $logdir)
  AWS test server        http://127.0.0.1:$AWS_PORT
  ssm_quota_exporter     http://127.0.0.1:$SSM_PORT/   (metrics: http://127.0.0.1:$SSM_PORT/metrics)

Parameter Store usage against its limits, per account and region:
TXT
curl -s "http://127.0.0.1:$SSM_PORT/metrics" | grep -E '^aws_quota_(usage|limit)\{' | sed 's/^/  /'
echo
echo "Press Ctrl-C to stop."
wait
