"""SGD, Adam and RMSprop over stacked parameters, each member with its own rule and lr.

    >>> opt = StackedOptimizer(population)
    >>> population.loss_and_grads(x, y); opt.step()

Members are sorted so that each (optimizer, lr) pair is a contiguous range along the member axis;
each range is updated by the same multi-tensor kernels torch.optim uses (`_fused_adam_`,
`_fused_sgd_` and the `_foreach_` ops of RMSprop), with torch.optim's default arguments, on
views of the stacked tensors. Updating a member never reads another member's numbers, and each
member's elements start at an aligned offset of the row blocks these kernels see, so its bits do
not depend on its position either.
"""

from __future__ import annotations

import torch

from hpstudy.engine.population import Population, runs

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam defaults
ADAM_EPS = 1e-8
RMSPROP_ALPHA = 0.99  # torch.optim.RMSprop defaults
RMSPROP_EPS = 1e-8


class StackedOptimizer:
    """Optimizer state (moments, step count) for every member of a population."""

    def __init__(self, population: Population):
        self.population = population
        needs_first = any(c.optimizer == "adam" for c in population.configs)
        needs_second = any(c.optimizer in ("adam", "rmsprop") for c in population.configs)
        # Moments exist for every member (zeros where unused) so member slices line up; they
        # share the population's padded row layout, so every kernel below sees each member at
        # an aligned offset (see population.ROW_ALIGN).
        self.exp_avg = [torch.zeros_like(r) for r in population.rows] if needs_first else None
        self.exp_avg_sq = [torch.zeros_like(r) for r in population.rows] if needs_second else None
        self.rule_runs = runs([(c.optimizer, c.lr) for c in population.configs])
        # Every member of a population has taken the same number of steps.
        self.step_count = torch.zeros((), dtype=torch.float32, device=population.params[0].device)

    def select(self, keep: torch.Tensor) -> None:
        """Keep the state of members at `keep`; call right after Population.select(keep)."""
        self.rule_runs = runs([(c.optimizer, c.lr) for c in self.population.configs])
        if self.exp_avg is not None:
            self.exp_avg = [t[keep] for t in self.exp_avg]
        if self.exp_avg_sq is not None:
            self.exp_avg_sq = [t[keep] for t in self.exp_avg_sq]

    def step(self) -> None:
        pop = self.population
        self.step_count += 1
        for (name, lr), s in self.rule_runs:
            params = [p[s] for p in pop.rows]  # (k, padded numel): padding stays zero
            grads = [g[s] for g in pop.grad_rows]
            if name == "sgd":
                _sgd(params, grads, lr)
            elif name == "adam":
                _adam(
                    params,
                    grads,
                    [m[s] for m in self.exp_avg],
                    [v[s] for v in self.exp_avg_sq],
                    self.step_count,
                    lr,
                )
            else:
                _rmsprop(params, grads, [v[s] for v in self.exp_avg_sq], lr)


def _sgd(params, grads, lr: float) -> None:
    torch._foreach_add_(params, grads, alpha=-lr)


def _adam(params, grads, exp_avgs, exp_avg_sqs, step: torch.Tensor, lr: float) -> None:
    beta1, beta2 = ADAM_BETAS
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
        weight_decay=0.0,
        eps=ADAM_EPS,
        amsgrad=False,
        maximize=False,
    )


def _rmsprop(params, grads, square_avgs, lr: float) -> None:
    # torch.optim.RMSprop's foreach path with centered=False, momentum=0, weight_decay=0.
    torch._foreach_mul_(square_avgs, RMSPROP_ALPHA)
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - RMSPROP_ALPHA)
    avg = torch._foreach_sqrt(square_avgs)
    torch._foreach_add_(avg, RMSPROP_EPS)
    torch._foreach_addcdiv_(params, grads, avg, value=-lr)
