#!/usr/bin/env bash
# Issue 27's CPU speed measurements, in order, for one quiet window on the 2-core machine (nothing else running):
#   1. benchmarks/precision.py --compile   forward per precision x memory format (+ torch.compile), 1024 x 1024
#   2. benchmarks/block_size.py            halo overhead, local-engine px/s and peak RSS per block (512/1024/2048)
#   3. benchmarks/region_throughput.py     every row of the issue on 4 and 16 Mpx (the JSON behind docs/benchmarks.md)
# JSONs go to docs/results/ (precision_forward.json, block_size.json, region_throughput.json); each step's table is
# also kept in $LOGDIR. The JSONs of steps 2 and 3 are rewritten atomically; step 3's after every row
# ("complete": false until its last), so a window cut short still leaves the rows it finished.
#
#   benchmarks/quiet_window.sh              # refuses to start while the 1-minute load average is >= 1.0
#   FORCE=1 benchmarks/quiet_window.sh      # start anyway (the tables print the load beside every figure)
#   benchmarks/quiet_window.sh --estimate   # only print the plan and the time estimate
#
# Estimate: about 28 min, extrapolated from runs on this machine under load 2-4 (an idle machine should take less;
# not measured). docs/benchmarks.md, "The quiet-window run", gives the basis of each part.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
RESULTS=${RESULTS:-docs/results}
LOGDIR=${LOGDIR:-${TMPDIR:-/tmp}/earth-embed-quiet-window}

cat <<'EOF'
quiet window on 2 cores, estimated wall time (extrapolated from runs under load 2-4; idle should be less):
  1. precision.py --compile (6 variants, 2 compiles, 1024 x 1024)             ~3 min
  2. block_size.py (3 blocks x 2 rounds; no round starts that would end past 330 s)  ~4.5 min
  3. region_throughput.py --sizes 4 16 (11 bare forwards, 10 rows)            ~20 min
  total                                                                       ~28 min
EOF
if [[ "${1:-}" == "--estimate" ]]; then
    exit 0
fi
load=$(cut -d' ' -f1 /proc/loadavg)
if [[ -z "${FORCE:-}" ]] && awk -v l="$load" 'BEGIN { exit !(l >= 1.0) }'; then
    echo "load average $load: not a quiet window (something else runs). Wait, or FORCE=1 $0" >&2
    exit 1
fi
mkdir -p "$LOGDIR" "$RESULTS"
start=$(date +%s)
step() {
    echo
    echo "== $(date -u +%H:%M:%S) UTC, $(($(date +%s) - start)) s in, load $(cut -d' ' -f1-3 /proc/loadavg): $*"
}
step "1/3 precision.py --compile"
$PY benchmarks/precision.py --compile --json "$RESULTS/precision_forward.json" 2>&1 | tee "$LOGDIR/precision.txt"
step "2/3 block_size.py"
$PY benchmarks/block_size.py --json "$RESULTS/block_size.json" 2>&1 | tee "$LOGDIR/block_size.txt"
step "3/3 region_throughput.py --sizes 4 16"
$PY benchmarks/region_throughput.py --sizes 4 16 --json "$RESULTS/region_throughput.json" 2>&1 |
    tee "$LOGDIR/region_throughput.txt"
step "done: total $((($(date +%s) - start) / 60)) min; tables in $LOGDIR, JSONs in $RESULTS"
