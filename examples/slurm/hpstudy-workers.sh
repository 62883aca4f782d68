#!/usr/bin/env bash
# Slurm job array: N workers share one hpstudy study through one storage.
#
#   sbatch --array=1-8 examples/slurm/hpstudy-workers.sh          # 8 workers, any nodes
#   sbatch --dependency=afterany:<jobid> examples/slurm/hpstudy-gather.sh   # tables + report
#
# Set STUDY and STORAGE below (or export them before sbatch; --export=ALL is Slurm's default).
# STORAGE: postgresql://user@dbhost/hpstudy when the nodes reach a database server, or
# journal:///shared/hpstudy/<study>.log on a file system every node mounts (no server).
# The data must be on every node: HPSTUDY_DATA_DIR on the shared file system (fetch it once
# with `HPSTUDY_DATA_DIR=... hpstudy data verify` on a login node).
#SBATCH --job-name=hpstudy-worker
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --output=hpstudy-worker-%A_%a.out
set -euo pipefail

STUDY="${STUDY:-search}"
STORAGE="${STORAGE:-journal:///shared/hpstudy/${STUDY}.log}"
export HPSTUDY_DATA_DIR="${HPSTUDY_DATA_DIR:-/shared/hpstudy/data}"
# A password, if any, comes from PGPASSWORD or ~/.pgpass, never from the URL in this file.

# One worker per array task. A killed or pre-empted task loses nothing: its trials are
# trained again by the others once its heartbeats stop (--grace seconds), so
# `#SBATCH --requeue` is safe too. Every worker must be given the same study options
# (seeds, epochs, limits, dtype); one with others is refused.
srun hpstudy worker "$STUDY" --storage "$STORAGE" --device cuda
