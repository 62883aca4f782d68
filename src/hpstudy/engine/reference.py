"""The plain PyTorch loop the engine must match: one configuration, `nn.Sequential`, `torch.optim`.

    >>> curves = train_reference(config, train_split, eval_split)

This is the paper's training loop with two deliberate choices that make it comparable member by
member: the batch order comes from `batch_order(seed, epoch)` (and an augmenting configuration's
flips and shifts from `augment.epoch_draws(config, epoch)`), and early stopping follows the same
rule as the engine (stop after `patience` epochs without a strictly better evaluation accuracy).
It is the reference for the exactness tests, not a fast path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hpstudy.config.config import Config
from hpstudy.engine.augment import augment as augment_images
from hpstudy.engine.augment import epoch_draws
from hpstudy.engine.dropout import dropout_generator, with_seeded_dropout
from hpstudy.engine.model import build_model
from hpstudy.engine.schedules import make_scheduler
from hpstudy.engine.splits import Split, batch_order


def make_torch_optimizer(config: Config, params) -> torch.optim.Optimizer:
    """torch.optim's optimizer for `config`: its arguments, torch's defaults for the rest."""
    c = config
    if c.optimizer == "sgd":
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                               weight_decay=c.weight_decay)  # fmt: skip
    if c.optimizer == "adam":
        return torch.optim.Adam(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)
    return torch.optim.RMSprop(params, lr=c.lr, weight_decay=c.weight_decay)


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
    model = build_model(config).to(device=train.x.device, dtype=train.x.dtype)
    model, dropout_slot = with_seeded_dropout(model)  # no change without dropout
    optimizer = make_torch_optimizer(config, model.parameters())
    scheduler = make_scheduler(config, optimizer)
    loss_fn = nn.CrossEntropyLoss()
    run = ReferenceRun(model, [], [], [], 0)
    best, since_best = -1.0, 0
    for epoch in range(1, (max_epochs or config.max_epochs) + 1):
        order = batch_order(config.seed, epoch, len(train)).to(train.x.device)
        dropout_slot[0] = dropout_generator(config.seed, epoch, train.x.device)
        augmenting = config.augment != "none"
        draws = epoch_draws(config, epoch, len(train), train.x.device) if augmenting else None
        model.train()
        total, n_steps = 0.0, 0
        for start in range(0, len(train), config.batch_size):
            idx = order[start : start + config.batch_size]
            x = train.x[idx]
            if draws is not None:
                x = augment_images(x, draws.slice(start, start + len(idx)), config.image_side)
            loss = loss_fn(model(x), train.y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, n_steps = total + loss.item(), n_steps + 1
        if scheduler is not None:
            scheduler.step()
        model.eval()
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
