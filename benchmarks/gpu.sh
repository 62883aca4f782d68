#!/usr/bin/env bash
# The GPU device check for issue 7, as one script: GPU tests, the side-by-side benchmark, then the
# two end-to-end studies with five seeds. About 10 minutes on one H100.
#
# Prepare on the development machine (repo root), once:
#   echo /.whl/ >> .git/info/exclude; echo /.data/ >> .git/info/exclude
#   mkdir -p .data && cp /usr/share/datasets/fashion-mnist/*.gz .data/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl optuna sqlalchemy alembic colorlog mako greenlet tqdm platformdirs
# Then run it on the device with `carry: [".whl", ".data"]`, writing results under $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}
export HPSTUDY_DATA_DIR=${HPSTUDY_DATA_DIR:-$PWD/.data}
hp() { python3 -m hpstudy.cli "$@"; }

nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_engine.py 2>&1 | tee "$OUT/gpu-tests.txt"
hp bench --device cuda --members 1,75,375,1500 --steps 300 --json | tee "$OUT/bench.json"
for study in paper grid; do
  start=$(date +%s.%N)
  hp run "$study" --seeds 5 --device cuda --out "$OUT/$study" --no-report 2>"$OUT/$study.log" \
    | tail -n 3 | tee "$OUT/$study.txt"
  echo "$study end to end: $(echo "$(date +%s.%N) - $start" | bc) s" | tee -a "$OUT/$study.txt"
done
