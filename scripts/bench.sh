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

timed() { # command...: prints "<seconds> s, max RSS <n> KiB"; the exit code does not matter here
  /usr/bin/time -f '%e s, max RSS %M KiB' -o "$work/time" "$@" > /dev/null 2>&1 || true
  tail -n 1 "$work/time"
}

echo "## manifest size: validate (stream + checks + duplicate detection)"
for n in "${sizes[@]}"; do
  make_manifest "$n" "$work/m$n.csv"
  printf '%s rows (%s): ' "$n" "$(du -h "$work/m$n.csv" | cut -f1)"
  timed "$bin" validate "$work/m$n.csv"
done

echo "## workbooks: validate an .xlsx of distinct rows (streamed; the shared strings stay in memory)"
for n in 100000 300000; do
  cargo run --release --quiet --example workbook -- rows "$n" "$work/w$n.xlsx"
  printf '%s rows (%s): ' "$n" "$(du -h "$work/w$n.xlsx" | cut -f1)"
  timed "$bin" validate "$work/w$n.xlsx"
done

echo "## ledger scale: ingest into a ledger, then status and export"
for n in "${sizes[@]}"; do
  printf '%s rows, run --no-wait --max-in-flight 1 (ingest + 1 submit): ' "$n"
  timed "$bin" run "$work/m$n.csv" --simulate --no-wait --max-in-flight 1 --quiet
  printf '%s rows, second run (re-ingest, nothing new): ' "$n"
  timed "$bin" run "$work/m$n.csv" --simulate --no-wait --max-in-flight 1 --quiet
  printf '%s rows, status: ' "$n"
  timed "$bin" status "$work/m$n.csv"
  printf '%s rows, export: ' "$n"
  timed "$bin" export "$work/m$n.csv"
  printf '%s rows, ledger size: %s\n' "$n" "$(du -h "$work/m$n.pixbatch.db" | cut -f1)"
done

echo "## throughput: 300 rows at --submit-rate 600 (one every 100 ms) against the simulator"
make_manifest 300 "$work/t.csv"
start=$(date +%s.%N)
"$bin" run "$work/t.csv" --simulate --submit-rate 600 --poll-rate 6000 --workers 8 --poll-interval 500ms \
  --sim-task-time 2s --sim-latency 50ms --quiet --out "$work/t-out" > "$work/t.out" || true
end=$(date +%s.%N)
python3 - "$start" "$end" "$work/t-out/results.csv" <<'PY'
import csv, sys, datetime
start, end, results = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
rows = list(csv.DictReader(open(results)))
times = sorted(datetime.datetime.fromisoformat(r["submitted_at"].replace("Z", "+00:00")).timestamp() for r in rows)
span = times[-1] - times[0]
print(f"  {len(rows)} rows end to end in {end - start:.1f} s")
print(f"  submissions spanned {span:.0f} s (1 s resolution): {(len(rows) - 1) / max(span, 1) * 60:.0f}/min achieved of 600/min configured")
PY
head -n 1 "$work/t.out" | sed 's/^/  /'
