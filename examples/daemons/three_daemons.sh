#!/usr/bin/env bash
# Three `zjobs serve` daemons of one job on ports the system picks, one `zjobs send` client
# load-balancing over them, then a graceful stop.
# Run from anywhere: bash examples/daemons/three_daemons.sh
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  echo "usage: bash examples/daemons/three_daemons.sh   (no options; ZJOBS=path/to/zjobs to choose the command)"
  echo "Starts three zjobs serve daemons, load-balances 3000 requests over them with zjobs send, stops them."
  exit 0
fi
cd "$(dirname "$0")"
ZJOBS=${ZJOBS:-zjobs}
tmp=$(mktemp -d)
pids=()
cleanup() {
  if ((${#pids[@]})); then kill -TERM "${pids[@]}" 2>/dev/null || true; wait || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

for i in 0 1 2; do
  "$ZJOBS" serve jobs:whoami --name "whoami-$i" \
      --requests 'tcp://127.0.0.1:*' --responses 'tcp://127.0.0.1:*' \
      >"$tmp/$i.out" 2>"$tmp/$i.log" &
  pids+=($!)
done

requests=() responses=()
for i in 0 1 2; do
  until grep -q '^listening ' "$tmp/$i.out"; do sleep 0.05; done   # the line serve prints
  line=$(head -n1 "$tmp/$i.out")
  echo "$line"
  requests+=(--requests "$(sed 's/.*requests=\([^ ]*\).*/\1/' <<<"$line")")
  responses+=(--responses "$(sed 's/.*responses=\([^ ]*\).*/\1/' <<<"$line")")
done

"$ZJOBS" ping "${requests[@]}" "${responses[@]}"
"$ZJOBS" send "${requests[@]}" "${responses[@]}" --count 3000 --concurrency 50 '"hello"'
seq 6 | "$ZJOBS" send "${requests[@]}" "${responses[@]}"   # one JSON line per response

kill -TERM "${pids[@]}"
wait "${pids[@]}"
pids=()
grep -h stopped "$tmp"/*.log
