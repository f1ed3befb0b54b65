#!/usr/bin/env bash
# Measurements for docs/benchmarks.md: memory and time against manifest
# size, ledger scale, and submit throughput against the simulator.
# Usage: scripts/bench.sh [ROWS...]   (default: 10000 100000 1000000)
# Everything runs on 127.0.0.1; scratch files go to a temp folder.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$PWD/target/release/pixbatch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sizes=("${@:-10000 100000 1000000}")
sizes=(${sizes[*]})

make_manifest() { # rows path
  python3 - "$1" "$2" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
with open(path, "w") as f:
    f.write("id,image,prompt,duration,resolution,notes\n")
    for i in range(n):
        f.write(f'row-{i},https://cdn.example.com/stills/{i}.png,"Shot {i}: a slow pan, golden light",5,720p,batch {i % 7}\n')
PY
}

measure() { # label command...
  local out
  out=$( { /usr/bin/time -f '%e s, max RSS %M KiB' "$@" > /dev/null 2> "$work/err"; } 2>&1 || true)
  tail -n 1 "$work/err" | sed "s/^/  $1: /"
}

echo "## manifest size: validate (stream + checks + duplicate detection)"
for n in "${sizes[@]}"; do
  make_manifest "$n" "$work/m$n.csv"
  printf '%s rows (%s): ' "$n" "$(du -h "$work/m$n.csv" | cut -f1)"
  /usr/bin/time -f '%e s, max RSS %M KiB' "$bin" validate "$work/m$n.csv" 2>&1 >/dev/null | tail -n 1
done

echo "## ledger scale: ingest into a ledger, then status and export"
for n in "${sizes[@]}"; do
  printf '%s rows, run --no-wait --max-in-flight 1 (ingest + 1 submit): ' "$n"
  /usr/bin/time -f '%e s, max RSS %M KiB' "$bin" run "$work/m$n.csv" --simulate --no-wait --max-in-flight 1 --quiet 2>&1 >/dev/null | tail -n 1
  printf '%s rows, second run (re-ingest, nothing new): ' "$n"
  /usr/bin/time -f '%e s, max RSS %M KiB' "$bin" run "$work/m$n.csv" --simulate --no-wait --max-in-flight 1 --quiet 2>&1 >/dev/null | tail -n 1
  printf '%s rows, status: ' "$n"
  /usr/bin/time -f '%e s, max RSS %M KiB' "$bin" status "$work/m$n.csv" 2>&1 >/dev/null | tail -n 1
  printf '%s rows, export: ' "$n"
  /usr/bin/time -f '%e s, max RSS %M KiB' "$bin" export "$work/m$n.csv" 2>&1 >/dev/null | tail -n 1
  printf '%s rows, ledger size: %s\n' "$n" "$(du -h "$work/m$n.pixbatch.db" | cut -f1)"
done

echo "## throughput: 200 rows at --submit-rate 600 against the simulator"
make_manifest 200 "$work/t.csv"
start=$(date +%s.%N)
"$bin" run "$work/t.csv" --simulate --submit-rate 600 --workers 8 --poll-interval 500ms --sim-task-time 2s --sim-latency 50ms --quiet > "$work/t.out"
end=$(date +%s.%N)
python3 - "$start" "$end" <<'PY'
import sys
start, end = map(float, sys.argv[1:])
print(f"  200 rows end to end in {end - start:.1f} s; the submit limit alone needs 199 * 100 ms = 19.9 s")
PY
head -n 1 "$work/t.out" | sed 's/^/  /'
