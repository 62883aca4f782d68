"""The plain PyTorch loop the engine must match: one configuration, `nn.Sequential`, `torch.optim`.

    >>> curves = train_reference(config, train_split, eval_split)

This is the paper's training loop with two deliberate choices that make it comparable member by
member: the batch order comes from `batch_order(seed, epoch)`, and early stopping follows the same
rule as the engine (stop after `patience` epochs without a strictly better evaluation accuracy).
It is the reference for the exactness tests, not a fast path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hpstudy.engine.splits import Split, batch_order
from hpstudy.model import build_mlp
from hpstudy.space import Config

# Learning rates from which Adam and RMSprop are chaotic here: a rounding-level difference
# (1e-15 relative, in float64) grows about a thousandfold per epoch instead of staying at the
# rounding level (measured on T4, see docs/design.md, "The contract"). No two implementations,
# nor one implementation with its batch rows in another order, agree on their trajectories.
CHAOTIC_LR = {"adam": 0.05, "rmsprop": 0.01}


def is_chaotic(config: Config) -> bool:
    """Whether `config`'s training amplifies rounding differences (see CHAOTIC_LR)."""
    return config.lr >= CHAOTIC_LR.get(config.optimizer, float("inf"))


def make_torch_optimizer(config: Config, params) -> torch.optim.Optimizer:
    """torch.optim's optimizer for `config`, with its default arguments."""
    classes = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
    return classes[config.optimizer](params, lr=config.lr)


@dataclass
class ReferenceRun:
    model: nn.Sequential  # weights after the last epoch run
    train_loss: list[float]
    eval_loss: list[float]
    eval_accuracy: list[float]
    best_epoch: int


def train_reference(
    config: Config, train: Split, evaluation: Split, *, max_epochs: int | None = None
) -> ReferenceRun:
    """Train `config` alone, exactly as a population member would be trained."""
    torch.manual_seed(config.seed)
    model = build_mlp(config).to(device=train.x.device, dtype=train.x.dtype)
    optimizer = make_torch_optimizer(config, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    run = ReferenceRun(model, [], [], [], 0)
    best, since_best = -1.0, 0
    for epoch in range(1, (max_epochs or config.max_epochs) + 1):
        order = batch_order(config.seed, epoch, len(train)).to(train.x.device)
        total, n_steps = 0.0, 0
        for idx in order.split(config.batch_size):
            loss = loss_fn(model(train.x[idx]), train.y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, n_steps = total + loss.item(), n_steps + 1
        with torch.no_grad():
            logits = model(evaluation.x)
            run.eval_loss.append(loss_fn(logits, evaluation.y).item())
            accuracy = (logits.argmax(1) == evaluation.y).double().mean().item()
        run.train_loss.append(total / n_steps)
        run.eval_accuracy.append(accuracy)
        if accuracy > best:
            best, since_best, run.best_epoch = accuracy, 0, epoch
        else:
            since_best += 1
            if since_best >= config.patience:
                break
    return run
