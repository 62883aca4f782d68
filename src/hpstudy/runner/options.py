"""What a run is asked to do beyond its study file: folder, storage, device, limits.

    >>> options = RunOptions(out="runs/try", limit_train=2000, device="cpu")
    >>> RunOptions(limit_train=0)          # UserError: --limit-train must be >= 1, got 0

`RunOptions` checks itself, so the Python API refuses what the command line refuses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hpstudy.errors import UserError
from hpstudy.storage import GRACE_S

DTYPES = ("float32", "float64", "tf32")  # tf32: float32 with TensorFloat-32 matmuls (CUDA)
OPTIMIZER_STEPS = ("grouped", "fused")  # engine.optimizers.OPTIMIZER_STEPS (no torch import here)


@dataclass(frozen=True)
class RunOptions:
    """Command-line choices that are not part of the study file."""

    out: str | None = None  # run folder (default runs/<study>)
    storage: str | None = None  # storage URL (default: SQLite in the run folder)
    fresh: bool = False  # delete the study's trials and outputs first
    device: str = "cpu"
    dtype: str = "float32"  # float32, float64, or tf32 (float32 with TF32 matmuls, CUDA)
    limit_train: int | None = None  # train on a stratified subset of this many images
    limit_eval: int | None = None  # evaluate on a stratified subset of this many images
    data_dir: str | None = None
    batch: int | None = None  # most trials per engine call (default: the study's)
    grace_s: int = GRACE_S  # heartbeat age after which another process counts as dead
    # Replay training steps from CUDA graphs (CUDA only); None: on for a CUDA device, where
    # they train bit for bit as eager steps do (tested on an H200) in a third of the time.
    cuda_graphs: bool | None = None
    # Advance an engine call's populations together, each on its own CUDA stream; None: on for a
    # CUDA device, off on the CPU (where running them together gains nothing). Same results.
    concurrent_populations: bool | None = None
    yes: bool = False  # go ahead with a plan above MAX_TRIALS_UNASKED trials
    threads: int | None = None  # torch CPU threads (default: torch's, one per core)
    # The engine's optimizer step: "grouped" (one update per rule group, the default) or "fused"
    # (every rule in one op sequence per tensor); their float32 bits differ.
    optimizer_step: str = "grouped"

    def __post_init__(self) -> None:
        _check_options(self)


def _check_options(options: RunOptions) -> None:
    for name in ("limit_train", "limit_eval", "batch", "threads"):
        value = getattr(options, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):  # fmt: skip
            raise UserError(f"--{name.replace('_', '-')} must be an integer >= 1, got {value!r}")
    cores = os.cpu_count() or 1
    if options.threads is not None and options.threads > cores:  # each thread costs memory
        raise UserError(f"--threads must be at most the {cores} cores of this machine (more "
                        f"threads only wait on each other), got {options.threads}")  # fmt: skip
    if isinstance(options.grace_s, bool) or not isinstance(options.grace_s, int) or \
            options.grace_s < 1:  # fmt: skip
        raise UserError(f"--grace must be an integer >= 1, got {options.grace_s!r}")
    if options.optimizer_step not in OPTIMIZER_STEPS:
        raise UserError(f"--optimizer-step must be one of {', '.join(OPTIMIZER_STEPS)}, "
                        f"got {options.optimizer_step!r}")  # fmt: skip
    if options.dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {options.dtype!r}")
    on_cuda = str(options.device).startswith("cuda")
    if options.dtype == "tf32" and not on_cuda:
        raise UserError(f"--dtype tf32 needs a CUDA device, got --device {options.device}; "
                        "use --dtype float32 on the CPU")  # fmt: skip
    if options.cuda_graphs and not on_cuda:
        raise UserError(f"--cuda-graphs needs a CUDA device, got --device {options.device}; "
                        "leave it out on the CPU")  # fmt: skip
    if options.cuda_graphs is None:
        object.__setattr__(options, "cuda_graphs", on_cuda)  # frozen: resolved once, here
