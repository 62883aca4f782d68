#!/usr/bin/env bash
# Engine speed of the working tree against an earlier commit, side by side in one run:
#   bash benchmarks/compare_commits.sh [BASE=HEAD~1] [ROUNDS=5] [MEMBERS=15]
# Each round runs `hpstudy bench --steps 100` once from BASE's sources and once from the working
# tree (alternating which goes first), and the medians of engine_<MEMBERS> per model-epoch and
# their ratio are printed. Uses this checkout's .venv.
set -euo pipefail
base=${1:-HEAD~1}; rounds=${2:-5}; members=${3:-15}
root=$(git rev-parse --show-toplevel)
tree=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tree" >/dev/null 2>&1 || true' EXIT
git -C "$root" worktree add --detach "$tree" "$base" >/dev/null 2>&1
py="$root/.venv/bin/python"
time_of() {  # $1: source folder -> seconds per model-epoch of engine_<members>
  PYTHONPATH="$1" "$py" -c "import sys; from hpstudy.cli import main; sys.exit(main())" bench --steps 100 --repeats 1 --members "$members" --json \
    2>/dev/null | "$py" -c "import json,sys; print(json.load(sys.stdin)['per_model_epoch_s']['engine_$members'])"
}
base_s=(); head_s=()
for ((r = 0; r < rounds; r++)); do
  if ((r % 2)); then head_s+=("$(time_of "$root/src")"); base_s+=("$(time_of "$tree/src")")
  else base_s+=("$(time_of "$tree/src")"); head_s+=("$(time_of "$root/src")"); fi
done
"$py" - "$base" "$members" "${base_s[*]}" "${head_s[*]}" <<'PY'
import statistics, sys
base, members, b, h = sys.argv[1], sys.argv[2], list(map(float, sys.argv[3].split())), list(map(float, sys.argv[4].split()))
mb, mh = statistics.median(b), statistics.median(h)
print(f"engine_{members} s per model-epoch, median of {len(b)} interleaved rounds")
print(f"  {base:>12}: {mb:.4f}  (rounds: {', '.join(f'{x:.4f}' for x in b)})")
print(f"  {'working tree':>12}: {mh:.4f}  (rounds: {', '.join(f'{x:.4f}' for x in h)})")
print(f"  ratio working tree / {base}: {mh / mb:.3f}")
PY
