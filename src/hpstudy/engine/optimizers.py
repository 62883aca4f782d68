"""SGD, Adam and RMSprop over stacked parameters, each member with its own rule and arguments.

    >>> opt = StackedOptimizer(population)
    >>> opt.start_epoch(1)                       # each member's scheduled learning rate
    >>> population.loss_and_grads(x, y); opt.step()
    >>> StackedOptimizer(population, step="fused")  # one op sequence for every rule (engine.fused)

Members are sorted so that each update group (see `group_key`) is a contiguous range along the
member axis. Adam's groups are whole rules, updated by torch.optim's own `_fused_adam_`; SGD and
RMSprop follow torch.optim's op sequence with their learning rate (scheduled), momentum and
weight decay as per-member (k, 1) columns, so members that differ only in those numbers are one
range. Updating a member never reads another member's numbers, and each member's elements start
at an aligned offset of the row blocks these kernels see, so its bits do not depend on its
position.

Two step paths exist (`OPTIMIZER_STEPS`): "grouped" (above, the default) and "fused"
(`engine.fused`: every rule in one op sequence per tensor). They agree to rounding but not bit
for bit in float32, so each trial records `engine_version(step)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hpstudy.config.config import Config
from hpstudy.engine.fused import (
    ADAM_EPS,
    RMSPROP_ALPHA,
    RMSPROP_EPS,
    RuleColumns,
    Scratch,
    fused_step,
)
from hpstudy.engine.population import runs
from hpstudy.engine.populations import StackedPopulation
from hpstudy.engine.schedules import epoch_lr
from hpstudy.engine.splits import to_device

__all__ = ["ADAM_EPS", "OPTIMIZER_STEPS", "RMSPROP_ALPHA", "RMSPROP_EPS", "StackedOptimizer",
           "engine_version", "group_key"]  # fmt: skip

# The optimizer step paths; the first is the default. A path's float32 bits are its own.
OPTIMIZER_STEPS = ("grouped", "fused")
# Raised when a change alters some trial's float32 bits on a path (stored with each trial).
ENGINE_REVISION = 1


def engine_version(step: str = "grouped") -> str:
    """What each trial records as its engine: results of two versions may differ in the last
    bits (float32), so a resumed study must not mix them silently."""
    check_step(step)
    return f"{ENGINE_REVISION}-{step}"


def check_step(step: str) -> None:
    if step not in OPTIMIZER_STEPS:
        names = ", ".join(OPTIMIZER_STEPS)
        raise ValueError(f"optimizer step must be one of {names}, got {step!r}")


def group_key(config: Config) -> tuple:
    """Members with equal keys are updated together, as one run of the member axis.

    Adam's fused kernel takes its arguments as numbers, so an Adam run is one whole rule. SGD
    and RMSprop take the learning rate (scheduled), momentum and weight decay as per-member
    (k, 1) columns, so one run holds every SGD member of a kind (with or without momentum,
    Nesterov or not) and every RMSprop member: a population of 15 learning rates updates with
    one op sequence instead of 15 (measured in benchmarks/scalar_runs.py).
    """
    c = config
    if c.optimizer == "adam":
        return ("adam", c.lr, c.schedule, c.max_epochs, c.weight_decay, c.betas)
    if c.optimizer == "sgd":
        return ("sgd", c.momentum > 0, c.nesterov)
    return ("rmsprop",)


@dataclass
class _Run:
    """One run of members updated together, with its per-member argument columns."""

    members: slice
    first: Config  # the run's first member (Adam: every member has its arguments)
    neg_lr: torch.Tensor  # (k, 1): minus each member's learning rate for this epoch
    momentum: torch.Tensor | None  # (k, 1), SGD with momentum
    weight_decay: torch.Tensor | None  # (k, 1), when some member has weight decay


class StackedOptimizer:
    """Optimizer state (moments, momentum buffers, step count) for every member."""

    def __init__(self, population: StackedPopulation, *, step: str = "grouped"):
        check_step(step)
        self.population = population
        self.fused = step == "fused"
        configs = population.configs
        # exp_avg is Adam's first moment and SGD's momentum buffer; exp_avg_sq the second
        # moment of Adam and RMSprop. Both exist for every member (zeros where unused) so member
        # slices line up; they share the population's padded row layout, so every kernel below
        # sees each member at an aligned offset (see population.ROW_ALIGN).
        needs_first = any(c.optimizer == "adam" or c.momentum for c in configs)
        needs_second = any(c.optimizer in ("adam", "rmsprop") for c in configs)
        self.exp_avg = [torch.zeros_like(r) for r in population.rows] if needs_first else None
        self.exp_avg_sq = [torch.zeros_like(r) for r in population.rows] if needs_second else None
        # Every member of a population has taken the same number of steps.
        self.step_count = torch.zeros((), dtype=torch.float32, device=population.params[0].device)
        self.n_steps = 0  # the same count on the host (SGD's first momentum step)
        self.epoch = 1
        self._make_runs()

    def _make_runs(self) -> None:
        configs, rows = self.population.configs, self.population.rows[0]
        if self.fused:
            self.columns = RuleColumns(configs, rows=rows)
            self.scratch = Scratch(self.population.rows)
            self.runs = []
            self.start_epoch(self.epoch)
            return

        def column(values) -> torch.Tensor:
            return torch.tensor(values, dtype=rows.dtype).unsqueeze(1).to(rows.device)

        self.runs = []
        for _, s in runs([group_key(c) for c in configs]):
            members = configs[s]
            decay = [c.weight_decay for c in members]
            self.runs.append(_Run(
                s, members[0], column([0.0] * len(members)),
                column([c.momentum for c in members]) if members[0].momentum else None,
                column(decay) if any(decay) else None,
            ))  # fmt: skip
        self.start_epoch(self.epoch)

    def start_epoch(self, epoch: int) -> None:
        """Use each member's scheduled learning rate for epoch `epoch` (1-based)."""
        self.epoch = epoch
        configs = self.population.configs
        if self.fused:
            self.columns.start_epoch(epoch)
        for run in self.runs:
            # Copied into the same tensor: a CUDA graph that reads it sees the new rates.
            rates = torch.tensor([-epoch_lr(c, epoch) for c in configs[run.members]],
                                 dtype=run.neg_lr.dtype).unsqueeze(1)  # fmt: skip
            run.neg_lr.copy_(to_device(rates, run.neg_lr.device))

    def select(self, keep: torch.Tensor) -> None:
        """Keep the state of members at `keep`; call right after the population's select(keep)."""
        self._make_runs()
        if self.exp_avg is not None:
            self.exp_avg = [t[keep] for t in self.exp_avg]
        if self.exp_avg_sq is not None:
            self.exp_avg_sq = [t[keep] for t in self.exp_avg_sq]

    def step(self) -> None:
        pop = self.population
        self.step_count += 1
        self.n_steps += 1
        if self.fused:
            fused_step(pop.rows, pop.grad_rows, self.exp_avg, self.exp_avg_sq, self.columns,
                       self.step_count, self.scratch)  # fmt: skip
            return
        for run in self.runs:
            s = run.members
            params = [p[s] for p in pop.rows]  # (k, padded numel): padding stays zero
            grads = [g[s] for g in pop.grad_rows]
            if run.first.optimizer == "sgd":
                buffers = [m[s] for m in self.exp_avg] if run.momentum is not None else None
                _sgd(params, grads, buffers, run, first=self.n_steps == 1)
            elif run.first.optimizer == "adam":
                exp_avgs = [m[s] for m in self.exp_avg]
                exp_avg_sqs = [v[s] for v in self.exp_avg_sq]
                lr = epoch_lr(run.first, self.epoch)
                _adam(params, grads, exp_avgs, exp_avg_sqs, self.step_count, run.first, lr)
            else:
                _rmsprop(params, grads, [v[s] for v in self.exp_avg_sq], run)


def _sgd(params, grads, buffers, run: _Run, *, first: bool) -> None:
    # torch.optim.SGD (dampening 0), member by member through the (k, 1) columns:
    # grad += wd * param; buf = grad on the first step, else buf = momentum * buf + grad; the
    # step is buf, or grad + momentum * buf with Nesterov; param -= lr * step.
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        if run.weight_decay is not None:
            grad.addcmul_(param, run.weight_decay)
        step = grad
        if buffers is not None:
            buf = buffers[i]
            if first:
                buf.copy_(grad)
            else:
                buf.mul_(run.momentum).add_(grad)
            if run.first.nesterov:
                grad.addcmul_(buf, run.momentum)
            else:
                step = buf
        param.addcmul_(step, run.neg_lr)


def _adam(params, grads, exp_avgs, exp_avg_sqs, step: torch.Tensor, config: Config, lr: float):
    beta1, beta2 = config.betas
    torch._fused_adam_(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        [],
        [step] * len(params),
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=config.weight_decay,
        eps=ADAM_EPS,
        amsgrad=False,
        maximize=False,
    )


def _rmsprop(params, grads, square_avgs, run: _Run) -> None:
    # torch.optim.RMSprop with centered=False, momentum=0: grad += wd * param first; then
    # v = alpha v + (1 - alpha) grad^2 and param -= lr * grad / (sqrt(v) + eps).
    if run.weight_decay is not None:
        for param, grad in zip(params, grads, strict=True):
            grad.addcmul_(param, run.weight_decay)
    torch._foreach_mul_(square_avgs, RMSPROP_ALPHA)
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - RMSPROP_ALPHA)
    avg = torch._foreach_sqrt(square_avgs)
    torch._foreach_add_(avg, RMSPROP_EPS)
    torch._foreach_div_(grads, avg)  # the gradients are recomputed by the next step
    for param, grad in zip(params, grads, strict=True):
        param.addcmul_(grad, run.neg_lr)
