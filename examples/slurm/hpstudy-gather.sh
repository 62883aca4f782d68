#!/usr/bin/env bash
# After the workers: write the tables, the final model and the report (trains nothing).
#   sbatch --dependency=afterany:<array jobid> examples/slurm/hpstudy-gather.sh
#SBATCH --job-name=hpstudy-gather
#SBATCH --gres=gpu:1
#SBATCH --time=00:30:00
#SBATCH --output=hpstudy-gather-%j.out
set -euo pipefail

STUDY="${STUDY:-search}"
STORAGE="${STORAGE:-journal:///shared/hpstudy/${STUDY}.log}"
export HPSTUDY_DATA_DIR="${HPSTUDY_DATA_DIR:-/shared/hpstudy/data}"

hpstudy status "$STUDY" --storage "$STORAGE"
# Same study options as the workers; any trial still missing (all workers died) is trained here.
hpstudy run "$STUDY" --storage "$STORAGE" --device cuda --out "/shared/hpstudy/runs/$STUDY"
hpstudy report "/shared/hpstudy/runs/$STUDY"
