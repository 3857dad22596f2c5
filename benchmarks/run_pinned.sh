#!/usr/bin/env bash
# Run the benchmarks that need quiet CPUs side by side, each job pinned to its own 2 cores (taskset), on a
# machine with >= 16 idle cores (and, optionally, one GPU for the GPU check). This is how the "2 CPU cores"
# numbers in the README were measured when the development machine's 2 cores were shared and saturated.
#
#   RESULTS=/tmp/res BUDGET_S=420 bash benchmarks/run_pinned.sh
#
# Each job writes RESULTS/NAME.json and RESULTS/NAME.log; jobs are stopped at BUDGET_S + 90 s.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${RESULTS:-/tmp/lmlab-pinned}"
BUDGET_S="${BUDGET_S:-420}"
PY="${PYTHON:-python3}"
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 KERAS_BACKEND=torch
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export LMLAB_SHARED_DATA="${LMLAB_SHARED_DATA:-$(cd .. && pwd)/shared/data}"
S2S_DATA="$LMLAB_SHARED_DATA/multi30k/raw"
LIMIT=$((BUDGET_S + 90))
B_MIN=$(python3 -c "print(round($BUDGET_S / 60, 1))")

job() {  # job NAME CORES COMMAND...
  local name=$1 cores=$2; shift 2
  ( start=$(date +%s)
    timeout --signal=INT --kill-after=20 "$LIMIT" taskset -c "$cores" "$@" > "$RESULTS/$name.log" 2>&1
    echo "exit $? after $(( $(date +%s) - start )) s" >> "$RESULTS/$name.log" ) &
}

nproc; lscpu | grep -E "Model name|^CPU\(s\)" || true
job classify-seed-lmlab 0,1 "$PY" benchmarks/classify.py --parts seed --seed-impls lmlab --epochs 2 --out "$RESULTS/classify-seed-lmlab.json"
job classify-seed-keras 2,3 "$PY" benchmarks/classify.py --parts seed --seed-impls keras --epochs 2 --out "$RESULTS/classify-seed-keras.json"
job classify-bilstm 4,5 "$PY" benchmarks/classify.py --parts bilstm --bilstm-budget-s "$BUDGET_S" --workdir /tmp/bench-cls --out "$RESULTS/classify-bilstm.json"
job lm-char 6,7 "$PY" benchmarks/lm.py --parts c --c-minutes "$B_MIN" --threads 2 --out "$RESULTS/lm.json"
job gpt-a-c 8-11 "$PY" benchmarks/gpt.py --parts a,c --a-parallel --threads 2 --workdir /tmp/bench-gpt-ac --out "$RESULTS/gpt-ac.json"
job gpt-b 12,13 "$PY" benchmarks/gpt.py --parts b --b-max-time-s "$BUDGET_S" --threads 2 --workdir /tmp/bench-gpt-b --out "$RESULTS/gpt-b.json"
if command -v nvidia-smi >/dev/null 2>&1; then
  # the GPU jobs: the GPT bf16/compile check, then the GRU + attention model trained on the GPU for the rest
  job gpu 14,15 bash -c "bash benchmarks/gpu_check.sh; $PY benchmarks/seq2seq.py --runs gru-bahdanau:de-en --device cuda --data $S2S_DATA \
      --budget-min $(python3 -c "print(round(max(1.0, ($BUDGET_S - 240) / 60), 1))") --runs-dir /tmp/bench-s2s-gpu --out $RESULTS/seq2seq-gpu.json"
else
  job seq2seq-gru 14,15 "$PY" benchmarks/seq2seq.py --runs gru-bahdanau:de-en --data "$S2S_DATA" --budget-min "$B_MIN" --threads 2 --runs-dir /tmp/bench-s2s --out "$RESULTS/seq2seq.json"
fi
wait
"$PY" benchmarks/classify.py --merge "$RESULTS/classify-seed-lmlab.json" "$RESULTS/classify-seed-keras.json" "$RESULTS/classify-bilstm.json" \
  --out "$RESULTS/classify.json" > "$RESULTS/classify-merge.log" 2>&1 || true
for f in "$RESULTS"/*.log; do echo "== $f"; tail -n 25 "$f"; done
