"""One optimizer step for every rule: SGD, Adam and RMSprop as one op sequence per tensor.

    >>> columns = RuleColumns(population.configs, rows=population.rows[0])
    >>> columns.start_epoch(3)                          # each member's scheduled learning rate
    >>> scratch = Scratch(population.rows)
    >>> fused_step(params, grads, exp_avg, exp_avg_sq, columns, step_count, scratch)

The grouped step (`optimizers.StackedOptimizer` with step="grouped") launches one update per
(rule, lr) group, so a population of many Adam rules costs many launches per tensor. Here every
member's rule is a set of (M, 1) columns, and one sequence of elementwise ops updates every member
of a tensor whatever its rule (g: gradient, p: parameter, m: first moment or momentum buffer,
v: second moment):

    g += wd * p
    m  = cm * m + cg * g          SGD: cm = momentum (0 on the first step), cg = 1; Adam: b1, 1 - b1
    v  = lerp(v, g * g, cq)       Adam: cq = 1 - b2; RMSprop: 1 - alpha; SGD: 0 (v stays 0)
    p += (em * m + eg * g) * (-lr / bc1) / (sqrt(v) * s + eps)

with s = 1 / sqrt(1 - b2^t) and bc1 = 1 - b1^t for Adam, s = 1, bc1 = 1 for RMSprop and, with
eps = 1 and v = 0, a denominator of exactly 1 for SGD. A coefficient of 0 or 1 is exact, so a
member's value does not depend on which terms its neighbours need (an op that no member needs is
skipped, with the same bits). The sequence is torch.optim's up to rounding (the step scale is
folded into em and eg, v is a lerp), so float64 matches it to rounding (SGD exactly); float32
bits differ from the grouped step's `_fused_adam_`, which is why this is a separate engine path
with its own version (`optimizers.engine_version`).

The columns that depend on the step count are computed on the device from the step tensor, so a
CUDA graph of a step stays right at every replay. On the CPU this plain-torch sequence makes more
passes over memory than `_fused_adam_`; a one-pass kernel (Triton on CUDA) is the next step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hpstudy.config.config import Config
from hpstudy.engine.schedules import epoch_lr
from hpstudy.engine.splits import to_device

ADAM_EPS = 1e-8  # torch.optim.Adam default
RMSPROP_ALPHA = 0.99  # torch.optim.RMSprop defaults
RMSPROP_EPS = 1e-8


def _rule_numbers(config: Config) -> dict[str, float]:
    """A member's constant coefficients (see the module docstring)."""
    c = config
    if c.optimizer == "adam":
        b1, b2 = c.betas
        return {"b1": b1, "cg": 1 - b1, "mom": 0.0, "cq": 1 - b2, "b2": b2,
                "em": 1.0, "eg": 0.0, "eps": ADAM_EPS, "wd": c.weight_decay}  # fmt: skip
    if c.optimizer == "rmsprop":
        return {"b1": 0.0, "cg": 0.0, "mom": 0.0, "cq": 1 - RMSPROP_ALPHA,
                "b2": 0.0, "em": 0.0, "eg": 1.0, "eps": RMSPROP_EPS,
                "wd": c.weight_decay}  # fmt: skip
    if c.optimizer != "sgd":
        raise ValueError(f"optimizer must be sgd, adam or rmsprop, got {c.optimizer!r}")
    momentum = c.momentum
    # Nesterov steps along g + momentum * buf; plain momentum along buf; no momentum along g.
    em, eg = (momentum, 1.0) if c.nesterov else ((1.0, 0.0) if momentum else (0.0, 1.0))
    return {"b1": 0.0, "cg": 1.0 if momentum else 0.0, "mom": momentum, "cq": 0.0,
            "b2": 0.0, "em": em, "eg": eg, "eps": 1.0, "wd": c.weight_decay}  # fmt: skip


class RuleColumns:
    """Every member's rule as (M, 1) columns on the device, in the population's dtype."""

    def __init__(self, configs: Sequence[Config], *, rows: torch.Tensor):
        self.configs = list(configs)
        numbers = [_rule_numbers(c) for c in self.configs]
        device, dtype = rows.device, rows.dtype

        def column(name: str, dtype=dtype) -> torch.Tensor:
            values = torch.tensor([n[name] for n in numbers], dtype=torch.float64).unsqueeze(1)
            return values.to(device=device, dtype=dtype)

        self.wd = column("wd") if any(n["wd"] for n in numbers) else None
        # Which state the population needs (as StackedOptimizer allocates it).
        self.uses_m = any(c.optimizer == "adam" or c.momentum for c in self.configs)
        self.uses_v = any(c.optimizer in ("adam", "rmsprop") for c in self.configs)
        self.cg, self.cq = column("cg"), column("cq")
        self.em, self.eg, self.eps = column("em"), column("eg"), column("eps")
        # Step-dependent columns are computed in float64 from these, then cast.
        self._b1, self._b2 = column("b1", torch.float64), column("b2", torch.float64)
        self._mom = column("mom", torch.float64)
        self._eg, self._em = column("eg", torch.float64), column("em", torch.float64)
        self._neg_lr = torch.zeros_like(self._b1)
        self.start_epoch(1)

    def start_epoch(self, epoch: int) -> None:
        """Use each member's scheduled learning rate for epoch `epoch` (1-based); copied into
        the same tensor, so a CUDA graph that reads it sees the new rates."""
        rates = torch.tensor([-epoch_lr(c, epoch) for c in self.configs], dtype=torch.float64)
        self._neg_lr.copy_(to_device(rates.unsqueeze(1), self._neg_lr.device))

    def for_step(self, step: torch.Tensor, dtype: torch.dtype):
        """(cm, s, eg * step_scale, em * step_scale) for step count `step` (a 0-d tensor, 1 on
        the first step), step_scale = -lr / bc1: device ops only, no host sync."""
        t = step.to(torch.float64)
        # SGD's buffer is the gradient itself on the first step: momentum 0 then.
        cm = self._b1 + self._mom * (t > 1).to(torch.float64)
        bc1 = 1 - self._b1**t  # 1 for SGD and RMSprop (b1 = 0)
        bc2 = 1 - self._b2**t
        # Adam divides sqrt(v) by sqrt(bc2); for RMSprop and SGD (b2 = 0) bc2 = 1.
        s = 1 / torch.sqrt(bc2)
        step_scale = self._neg_lr / bc1
        return cm.to(dtype), s.to(dtype), (self._eg * step_scale).to(dtype), \
            (self._em * step_scale).to(dtype)  # fmt: skip


class Scratch:
    """Two preallocated buffers as large as the largest row block: the update and the
    denominator of each tensor in turn (a fresh temporary per op would cost an allocation, and
    on the CPU page faults, every step)."""

    def __init__(self, rows: Sequence[torch.Tensor]):
        largest = max(r.numel() for r in rows)
        self.update = rows[0].new_empty(largest)
        self.denom = rows[0].new_empty(largest)

    def views(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = like.numel()
        return self.update[:n].view(like.shape), self.denom[:n].view(like.shape)


def fused_step(
    params: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    exp_avgs: Sequence[torch.Tensor] | None,
    exp_avg_sqs: Sequence[torch.Tensor] | None,
    columns: RuleColumns,
    step: torch.Tensor,
    scratch: Scratch,
) -> None:
    """Update every (M, n) row block in place; `grads` are overwritten (recomputed next step)."""
    # The step scale -lr / bc1 is folded into the (M, 1) columns eg and em (one op per tensor
    # fewer); the second moment is a lerp, as torch.optim.Adam writes its first.
    cm, s, eg, em = columns.for_step(step, params[0].dtype)
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if columns.wd is not None:
            g.addcmul_(p, columns.wd)  # torch.optim: grad + wd * param
        update, denom = scratch.views(p)
        torch.mul(g, eg, out=update)
        if columns.uses_m:
            m = exp_avgs[i]
            m.mul_(cm).addcmul_(g, columns.cg)
            update.addcmul_(m, em)
        if not columns.uses_v:
            p.add_(update)
            continue
        v = exp_avg_sqs[i]
        torch.mul(g, g, out=denom)
        v.lerp_(denom, columns.cq)  # (1 - cq) v + cq g^2
        torch.sqrt(v, out=denom)
        torch.addcmul(columns.eps, denom, s, out=denom)
        p.addcdiv_(update, denom)
