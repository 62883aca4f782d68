#!/usr/bin/env bash
# The GPU device checks (issues 7, 16 and 29), one phase per device command (< 10 min each). A
# session's 15 device minutes fit about three short calls or one long one; session 7 ran cnn,
# probe and graphs, session 8 cnn (design 2 of studies/cnn-gpu.toml).
#
#   bash benchmarks/gpu.sh engine      # GPU tests, then the side-by-side benchmark (fp32, tf32)
#   bash benchmarks/gpu.sh studies     # paper x 5 seeds; grid x 5 seeds in fp32 and in tf32
#   bash benchmarks/gpu.sh cnn         # issue 16: studies/cnn-gpu.toml, CNN tests, determinism
#   bash benchmarks/gpu.sh probe       # CUDA tests; cnn_gpu_probe.py (step costs, determinism)
#   bash benchmarks/gpu.sh graphs      # CUDA tests, then cnn-gpu with --cuda-graphs (BUDGET s)
#   bash benchmarks/gpu.sh fused       # issue 29: fused-step CUDA tests, grouped vs fused, phases
#   bash benchmarks/gpu.sh throughput  # issue 29 items 5-6: bits, ms per step, profile, the grid
#                                      # end to end, bench at 375, concurrent populations (~6 min)
#
# Every training run passes --cuda-graphs (the default on CUDA since session 8; runs before it
# needed the flag); `engine` times the engine with and without graphs side by side. Results go under $OUT.
#
# Prepare on the development machine (repo root), once:
#   echo /.whl/ >> .git/info/exclude; echo /.data/ >> .git/info/exclude
#   mkdir -p .data && cp /usr/share/datasets/fashion-mnist/*.gz .data/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl optuna sqlalchemy alembic colorlog mako greenlet tqdm platformdirs
# (`--platform manylinux_2_28_x86_64` too: greenlet's wheel needs it).
# (add torchvision's wheel for the device's torch version to get the torchvision bench row).
# Then run each phase on the device with `carry: [".whl", ".data"]`. A phase cut off by the
# time limit resumes when run again on the same warm machine: the run folders live in
# benchmarks/runs/ (ignored by git, kept between calls), only summaries and logs go to $OUT.
#
# `throughput` needs the same preparation (the device image has torch, numpy, pandas and
# torchvision; optuna and the rest travel as .whl) and nothing else; run it as one device call:
#   run(command="bash benchmarks/gpu.sh throughput", carry=[".whl", ".data"], timeout_s=600)
# It keeps to PHASE_BUDGET s (default 540) in all: each step runs under `timeout`, its limit cut
# to what is left, so a step that hangs costs only its own limit and a late one is skipped, not
# the call. Everything it prints lands in 6 files under $OUT (the device returns 8).
# tests/test_benchmarks.py runs throughput.py's sub-commands and run_summary.py on the CPU at
# their smallest sizes; the phase as a whole was rehearsed on the CPU (cuda -> cpu, small sizes).
set -euo pipefail
export PYTHONUNBUFFERED=1
PHASE_START=$(date +%s)
phase=${1:?usage: bash benchmarks/gpu.sh engine|studies|cnn|probe|graphs|fused|throughput}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
export HPSTUDY_DATA_DIR=${HPSTUDY_DATA_DIR:-$PWD/.data}
RUNS=benchmarks/runs
hp() { python3 -m hpstudy.cli "$@"; }

timed_run() {  # name, then `hpstudy run` arguments; prints the last lines and the wall time
  local name=$1; shift
  local start; start=$(date +%s.%N)
  # RUN_TIMEOUT bounds the run (0, the default: no bound)
  timeout "${RUN_TIMEOUT:-0}" python3 -m hpstudy.cli run "$@" --device cuda --cuda-graphs \
    --out "$RUNS/$name" --no-report \
    2>"$OUT/$name.log" | tail -n 3 | tee "$OUT/$name.txt"
  echo "$name end to end: $(echo "$(date +%s.%N) - $start" | bc) s" | tee -a "$OUT/$name.txt"
}

PHASE_BUDGET=${PHASE_BUDGET:-540}  # throughput: seconds for the whole phase
limit_for() {  # seconds: the smaller of $1 and what is left of PHASE_BUDGET (0 when none is)
  local left=$((PHASE_BUDGET - ($(date +%s) - PHASE_START)))
  if [ "$left" -lt "$1" ]; then echo $((left > 0 ? left : 0)); else echo "$1"; fi
}
bounded() {  # seconds, then a command: run it under timeout, never past PHASE_BUDGET
  local want=$1 limit; limit=$(limit_for "$1"); shift
  if [ "$limit" -lt "$want" ] && [ "$limit" -le 5 ]; then echo "[skipped, the phase's budget is spent: $*]"; return 124; fi
  local start; start=$(date +%s)
  timeout "$limit" "$@"
  local rc=$?
  echo "[rc $rc in $(($(date +%s) - start)) s (limit $limit s): $*]"
  return $rc
}

case $phase in
  engine)
    nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
    python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_engine.py tests/test_bench.py \
      2>&1 | tee "$OUT/gpu-tests.txt"
    hp bench --device cuda --members 1,75,375,1500 --steps 300 | tee "$OUT/bench.txt"
    hp bench --device cuda --members 1,75,375,1500 --steps 300 --tf32 | tee "$OUT/bench-tf32.txt"
    ;;
  studies)
    timed_run paper paper --seeds 5
    timed_run grid-tf32 grid --seeds 5 --dtype tf32
    timed_run grid-fp32 grid --seeds 5
    for run in paper grid-tf32 grid-fp32; do cp "$RUNS/$run/run.json" "$OUT/$run.run.json"; done
    python3 benchmarks/compare_precision.py "$RUNS/grid-fp32" "$RUNS/grid-tf32" \
      | tee "$OUT/tf32-vs-fp32.txt"
    ;;
  cnn)  # issue 16 on a GPU, one device call (< 10 min): studies/cnn-gpu.toml, then the CUDA
    # tests and the determinism probe (session 7 ran design 1 so, with the bench for the tests)
    set +e  # each step is bounded by its own timeout; a failing step must not cost the next
    nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
    python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
    # The study: search and 1 x 5 confirmation inside its time_budget_s; TF32 convolutions.
    start=$(date +%s)
    timeout 520 python3 -m hpstudy.cli run cnn-gpu --device cuda --dtype tf32 --cuda-graphs \
      --out "$RUNS/cnn-gpu" --no-report 2>"$OUT/cnn-gpu.log" >"$OUT/cnn-gpu.txt"
    echo "rc $? cnn-gpu end to end: $(($(date +%s) - start)) s" | tee -a "$OUT/cnn-gpu.txt"
    tail -n 20 "$OUT/cnn-gpu.txt"
    tar -czf "$OUT/cnn-gpu.tar.gz" -C "$RUNS" cnn-gpu
    timeout 40 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cnn.py 2>&1 \
      | tail -n 15 | tee "$OUT/cnn-tests.txt"
    timeout 25 python3 benchmarks/cnn_gpu_probe.py determinism 2>&1 | tee "$OUT/probe.txt"
    ;;
  probe)  # the CUDA tests, then cnn_gpu_probe.py: step costs, generators in graphs, determinism
    set +e
    timeout 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cnn.py \
      tests/test_engine.py 2>&1 | tee "$OUT/gpu-tests.txt" | tail -n 5
    timeout 120 python3 benchmarks/cnn_gpu_probe.py 2>&1 | tee "$OUT/probe.txt"
    ;;
  graphs)  # the CUDA tests, then cnn-gpu with graphed steps in a shorter budget (a broken
    # capture fails at once; bits that differ only slightly still leave the study worth having)
    set +e
    timeout 45 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cnn.py \
      tests/test_engine.py 2>&1 | tee "$OUT/gpu-tests.txt" | tail -n 5
    start=$(date +%s)
    timeout 270 python3 -m hpstudy.cli run cnn-gpu --device cuda --dtype tf32 --cuda-graphs \
      --time-budget "${BUDGET:-220}" --out "$RUNS/cnn-gpu-graphs" --no-report \
      2>"$OUT/cnn-gpu-graphs.log" >"$OUT/cnn-gpu-graphs.txt"
    echo "rc $? cnn-gpu-graphs end to end: $(($(date +%s) - start)) s" \
      | tee -a "$OUT/cnn-gpu-graphs.txt"
    tail -n 20 "$OUT/cnn-gpu-graphs.txt"
    tar -czf "$OUT/cnn-gpu-graphs.tar.gz" -C "$RUNS" cnn-gpu-graphs
    ;;
  fused)  # issue 29 items 2-4 (built without a GPU): the CUDA tests of the fused step, ops and
    # ms per step grouped vs fused (T1, T4; graphed), then the grid (one seed) on each path
    # with run.json's phase line
    set +e
    timeout 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_phases.py \
      tests/test_fused_step.py tests/test_engine.py 2>&1 | tee "$OUT/fused-tests.txt" | tail -n 5
    for t in T1 T4; do
      timeout 90 python3 benchmarks/optimizer_step.py --device cuda --cuda-graphs --topology $t \
        --steps 200 --rounds 5 2>&1 | tee "$OUT/optimizer-step-$t.txt"
    done
    for step in grouped fused; do
      timed_run "grid-$step" grid --seeds 1 --optimizer-step $step
      python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['phases_s'])" \
        "$RUNS/grid-$step/run.json" | tee -a "$OUT/grid-$step.txt"
    done
    ;;
  throughput)  # issue 29 items 5 and 6, one device call. Estimates from the H200 figures in
    # docs/results.md (the grid's seed: 126 s end to end, 106 s training for 4,308
    # model-epochs, about 100 population-epochs of ~843 steps, so ~1.2 ms per graphed step of
    # 75 members with evaluation; a cold start of python, torch, CUDA and the 60,000 images ~10 s).
    # In all about 375 s: bits 3 x 25, steps 25, profile 25, the grid 130, its summary 5, bench
    # 2 x 30, concurrent 50; the limits below add up to more, PHASE_BUDGET caps them at 540.
    set +e
    T="python3 benchmarks/throughput.py"
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
      python3 -c "import torch; print('torch', torch.__version__)"; } | tee "$OUT/gpu.txt"
    # bits (item 5): T1-T5, one member at sizes 1, 5, 75, 375, 50 graphed steps: 20
    # populations x 50 steps of <= 5 ms, each ~25 s with the start; float32, then TF32, then
    # float32 with eager steps (--no-cuda-graphs runs)
    for dtype in float32 tf32; do
      bounded 45 $T bits --device cuda --cuda-graphs --dtype $dtype 2>&1 | tee -a "$OUT/throughput.txt"
    done
    bounded 45 $T bits --device cuda 2>&1 | tee -a "$OUT/throughput.txt"
    # steps: T1-T5 x M = 1, 5, 25, 75, 3 rounds of 100 graphed steps: ~6,000 steps at ~1 ms,
    # 20 captures and the start: ~30 s
    bounded 60 $T steps --device cuda --cuda-graphs 2>&1 | tee -a "$OUT/throughput.txt"
    # profile: T4 and T5 at 75, 20 steps eager and graphed, twice each (timed, profiled): ~25 s
    bounded 45 $T profile --device cuda --cuda-graphs 2>&1 | tee -a "$OUT/throughput.txt"
    # the grid, one seed, float32, end to end: 126 s on the H200 before (fresh: a rerun of this
    # phase measures again instead of resuming a finished run)
    limit=$(limit_for 160)
    if [ "$limit" -gt 5 ]; then RUN_TIMEOUT=$limit timed_run grid-seed grid --seeds 1 --fresh
    else echo "[skipped, the phase's budget is spent: the grid]"; fi
    bounded 20 python3 benchmarks/run_summary.py "$RUNS/grid-seed" 2>&1 | tee -a "$OUT/grid-seed.txt"
    cp "$RUNS/grid-seed/run.json" "$OUT/grid-seed.run.json"
    # bench at 375 members, T4 + Adam: paper loop, its torchvision variant, engine eager and
    # graphed, 300 steps scaled to an epoch, 3 rounds: ~35 s each
    for tf32 in "" --tf32; do
      bounded 55 python3 -m hpstudy.cli bench --device cuda --members 375 --steps 300 --repeats 3 \
        $tf32 2>&1 | tee -a "$OUT/bench.txt"
    done
    # concurrent: 75 members of each topology, 3 epochs, sequential then concurrent: ~2 x 18 s
    # of training, evaluation and the start: ~50 s
    bounded 70 $T concurrent --device cuda --cuda-graphs --members 75 --max-epochs 3 2>&1 \
      | tee -a "$OUT/throughput.txt"
    echo "throughput phase: $(($(date +%s) - PHASE_START)) s of the ${PHASE_BUDGET} s budget"
    ;;
  *) echo "unknown phase $phase: use engine, studies, cnn, probe, graphs, fused or throughput" >&2
    exit 2 ;;
esac
