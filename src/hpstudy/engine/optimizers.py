"""SGD, Adam and RMSprop over stacked parameters, each member with its own rule and arguments.

    >>> opt = StackedOptimizer(population)
    >>> opt.start_epoch(1)                       # each member's scheduled learning rate
    >>> population.loss_and_grads(x, y); opt.step()

Members are sorted so that each rule (optimizer, learning rate, schedule, momentum, nesterov,
weight decay, betas) is a contiguous range along the member axis; each range is updated by the
same multi-tensor kernels torch.optim uses (`_fused_adam_`, the `_foreach_` ops of SGD and
RMSprop), with torch.optim's semantics for every argument, on views of the stacked tensors.
Updating a member never reads another member's numbers, and each member's elements start at an
aligned offset of the row blocks these kernels see, so its bits do not depend on its position.

Members that differ only in a scalar argument (lr, momentum, weight decay) share a population as
separate runs of one kernel sequence each. Per-member argument tensors would make that one
sequence, but `_fused_adam_` and the `_foreach_` ops take their scalars as numbers, and the
measured cost of a run is small beside the step's matmuls (docs/design.md, "The engine").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hpstudy.engine.population import Population, runs
from hpstudy.engine.schedules import epoch_lr
from hpstudy.space import Config

ADAM_EPS = 1e-8  # torch.optim.Adam default
RMSPROP_ALPHA = 0.99  # torch.optim.RMSprop defaults
RMSPROP_EPS = 1e-8


@dataclass(frozen=True)
class Rule:
    """What decides a member's update, apart from its numbers (members with equal rules form
    one run)."""

    optimizer: str
    lr: float  # the base rate; the schedule gives each epoch's
    schedule: str
    max_epochs: int  # the schedule's horizon
    momentum: float
    nesterov: bool
    weight_decay: float
    betas: tuple[float, float]

    @classmethod
    def of(cls, c: Config) -> Rule:
        return cls(c.optimizer, c.lr, c.schedule, c.max_epochs, c.momentum, c.nesterov,
                   c.weight_decay, c.betas)  # fmt: skip


def rule_key(config: Config) -> tuple:
    """The part of a population's sort key that makes each rule a contiguous range."""
    c = config
    return (c.optimizer, c.lr, c.schedule, c.max_epochs, c.momentum, c.nesterov, c.weight_decay,
            c.betas)  # fmt: skip


class StackedOptimizer:
    """Optimizer state (moments, momentum buffers, step count) for every member."""

    def __init__(self, population: Population):
        self.population = population
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
        self.start_epoch(1)

    def start_epoch(self, epoch: int) -> None:
        """Use each member's scheduled learning rate for epoch `epoch` (1-based)."""
        self.epoch = epoch
        configs = self.population.configs
        # (rule, this epoch's lr, member range) per run of equal rules
        self.rule_runs = [
            (Rule.of(configs[s.start]), epoch_lr(configs[s.start], epoch), s)
            for _, s in runs([rule_key(c) for c in configs])
        ]

    def select(self, keep: torch.Tensor) -> None:
        """Keep the state of members at `keep`; call right after Population.select(keep)."""
        self.start_epoch(self.epoch)
        if self.exp_avg is not None:
            self.exp_avg = [t[keep] for t in self.exp_avg]
        if self.exp_avg_sq is not None:
            self.exp_avg_sq = [t[keep] for t in self.exp_avg_sq]

    def step(self) -> None:
        pop = self.population
        self.step_count += 1
        self.n_steps += 1
        for rule, lr, s in self.rule_runs:
            params = [p[s] for p in pop.rows]  # (k, padded numel): padding stays zero
            grads = [g[s] for g in pop.grad_rows]
            if rule.optimizer == "sgd":
                buffers = [m[s] for m in self.exp_avg] if rule.momentum else None
                _sgd(params, grads, buffers, rule, lr, first=self.n_steps == 1)
            elif rule.optimizer == "adam":
                exp_avgs = [m[s] for m in self.exp_avg]
                exp_avg_sqs = [v[s] for v in self.exp_avg_sq]
                _adam(params, grads, exp_avgs, exp_avg_sqs, self.step_count, rule, lr)
            else:
                _rmsprop(params, grads, [v[s] for v in self.exp_avg_sq], rule, lr)


def _sgd(params, grads, buffers, rule: Rule, lr: float, *, first: bool) -> None:
    # torch.optim.SGD (dampening 0): grad += wd * param; buf = grad on the first step, else
    # buf = momentum * buf + grad; the step is buf, or grad + momentum * buf with nesterov.
    if rule.weight_decay:
        torch._foreach_add_(grads, params, alpha=rule.weight_decay)
    if buffers is not None:
        if first:
            torch._foreach_copy_(buffers, grads)
        else:
            torch._foreach_mul_(buffers, rule.momentum)
            torch._foreach_add_(buffers, grads)
        if rule.nesterov:
            torch._foreach_add_(grads, buffers, alpha=rule.momentum)
        else:
            grads = buffers
    torch._foreach_add_(params, grads, alpha=-lr)


def _adam(params, grads, exp_avgs, exp_avg_sqs, step: torch.Tensor, rule: Rule, lr: float):
    beta1, beta2 = rule.betas
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
        weight_decay=rule.weight_decay,
        eps=ADAM_EPS,
        amsgrad=False,
        maximize=False,
    )


def _rmsprop(params, grads, square_avgs, rule: Rule, lr: float) -> None:
    # torch.optim.RMSprop with centered=False, momentum=0: grad += wd * param first.
    if rule.weight_decay:
        torch._foreach_add_(grads, params, alpha=rule.weight_decay)
    torch._foreach_mul_(square_avgs, RMSPROP_ALPHA)
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - RMSPROP_ALPHA)
    avg = torch._foreach_sqrt(square_avgs)
    torch._foreach_add_(avg, RMSPROP_EPS)
    torch._foreach_addcdiv_(params, grads, avg, value=-lr)
