"""One population's training, an epoch at a time, so that several can advance together.

    >>> run = PopulationRun(configs, indices, train, evaluation, index=0, stream=stream)
    >>> with on_stream(run.stream):
    ...     run.begin_training(); run.finish_training(); run.launch_evaluation()
    >>> run.record(run.stats.tolist())        # after the host sync: losses and accuracies
    >>> run.stop(pruned, tracker)             # early stopping, pruning, divergence; select
    >>> if run.done: results = list(run.results(device_name, "float32"))

The launch methods queue device work only (`stats` stays on the device); `record` and `stop`
are the host's bookkeeping once the caller has moved `stats` to the host, so a caller that runs
several populations launches all their epochs first and syncs once (`training._advance`). On
CUDA each population may own a stream (`on_stream`): its epoch waits for what the current
stream queued before (the bookkeeping of the last epoch), and the caller makes the current
stream wait for it before reading `stats`. Tensors the launches allocate on a population's
stream are freed back to that stream's pool and reused only by its next launches, which are
ordered after the bookkeeping that read them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hpstudy.config.config import Config
from hpstudy.config.cost import n_parameters
from hpstudy.engine.optimizers import StackedOptimizer, engine_version
from hpstudy.engine.planning import EVAL_CHUNK_ELEMENTS
from hpstudy.engine.population import member_order_key
from hpstudy.engine.populations import StackedPopulation, population_for
from hpstudy.engine.results import Outcome, TrialResult
from hpstudy.engine.splits import Split
from hpstudy.engine.steps import StepRunner

_EVAL_CHUNK_ELEMENTS = EVAL_CHUNK_ELEMENTS  # a test shrinks it to make chunks depend on M


@dataclass
class _MemberRecord:
    """Running record of one member while it trains."""

    index: int  # position in train()'s configs
    train_loss: list[float] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)
    best_epoch: int = 0
    epochs_since_best: int = 0
    outcome: Outcome | None = None  # set when the member stops

    def record_epoch(self, train_loss: float, eval_loss: float, accuracy: float) -> bool:
        """Append one epoch; True when it is a new best (strictly higher accuracy)."""
        self.train_loss.append(train_loss)
        self.eval_loss.append(eval_loss)
        self.eval_accuracy.append(accuracy)
        best = self.eval_accuracy[self.best_epoch - 1] if self.best_epoch else -math.inf
        if accuracy > best and math.isfinite(train_loss):  # a diverged epoch is never best
            self.best_epoch, self.epochs_since_best = len(self.eval_accuracy), 0
            return True
        self.epochs_since_best += 1
        return False


class PopulationRun:
    """The members of one population (`indices` into `configs`) from their first epoch until
    the last one stops."""

    def __init__(
        self,
        configs: Sequence[Config],
        indices: Sequence[int],
        train: Split,
        evaluation: Split,
        *,
        index: int,
        cuda_graphs: bool = False,
        optimizer_step: str = "grouped",
        stream: torch.cuda.Stream | None = None,
    ):
        self.configs, self.evaluation, self.index, self.stream = configs, evaluation, index, stream
        self.optimizer_step = optimizer_step
        order = sorted(indices, key=lambda i: member_order_key(configs[i]))
        device = train.x.device
        self.pop: StackedPopulation = population_for(
            [configs[i] for i in order], device=device, dtype=train.x.dtype
        )
        self.optimizer = StackedOptimizer(self.pop, step=optimizer_step)
        self.steps = StepRunner(self.pop, self.optimizer, train, cuda_graph=cuda_graphs)
        self.records = [_MemberRecord(i) for i in order]  # parallel to pop.configs
        self.best_params = [p.clone() for p in self.pop.state_tensors()]
        # (M, N): each member's correct evaluation images at its best epoch
        self.best_correct = torch.zeros(
            self.pop.n_members, len(evaluation), dtype=torch.bool, device=device
        )
        self.finished: list[tuple[_MemberRecord, dict | None, np.ndarray | None]] = []
        self.max_epochs = max(c.max_epochs for c in self.pop.configs)
        self.n_params = n_parameters(self.pop.configs[0])
        self.epoch = 0
        self.stats: torch.Tensor | None = None  # (3, M) float64 on the device, once launched
        self._train_loss: torch.Tensor | None = None
        self._correct_mask: torch.Tensor | None = None
        # Wall time charged to this population by the caller: the epochs it ran alone, or its
        # share (by work) of epochs run beside others, so that shares add up to the call's time.
        self.wall_s = 0.0

    @property
    def done(self) -> bool:
        return self.pop.n_members == 0

    def begin_training(self) -> None:
        """Start the next epoch: its set-up, and with CUDA graphs the steps up to the capture
        (a capture waits for the whole device; nothing else here does)."""
        self.epoch += 1
        self.steps.begin_epoch(self.epoch)

    def finish_training(self) -> None:
        """Queue the epoch's remaining training steps."""
        self._train_loss = self.steps.finish_epoch()

    def launch_evaluation(self) -> None:
        """Queue the evaluation of every member; `stats` is then (train loss, eval loss,
        accuracy) x members, float64, on the device."""
        eval_loss, eval_correct, self._correct_mask = _evaluate_population(
            self.pop, self.evaluation
        )
        accuracy = eval_correct.double() / len(self.evaluation)  # exact counts, float64 ratio
        self.stats = torch.stack([self._train_loss.double(), eval_loss.double(), accuracy])

    def record(self, stats: list[list[float]]) -> None:
        """Record the epoch from `stats` on the host (3 rows of one value per member) and keep
        the weights and evaluation hits of members that improved."""
        per_member = zip(*stats, strict=True)  # (train loss, eval loss, accuracy) per member
        improved = [r.record_epoch(*row) for r, row in zip(self.records, per_member, strict=True)]
        _snapshot(self.best_params, self.pop.state_tensors(), improved)
        _snapshot([self.best_correct], [self._correct_mask], improved)
        self.stats = self._train_loss = self._correct_mask = None

    def stop(self, pruned: set[int], tracker=None) -> None:
        """Stop members whose patience or epochs ran out, that diverged or were `pruned`
        (indices into train()'s configs), and drop them from the stacked tensors."""
        keep = []
        for m, (rec, config) in enumerate(zip(self.records, self.pop.configs, strict=True)):
            rec.outcome = _stop_reason(rec, config, self.epoch, pruned)
            if rec.outcome is None:
                keep.append(m)
                continue
            if tracker is not None:
                tracker.member_stopped(self.epoch, self.max_epochs)
            usable = rec.best_epoch and rec.outcome is not Outcome.DIVERGED
            state = self.pop.state_dict_from(self.best_params, m) if usable else None
            mask = self.best_correct[m].cpu().numpy() if rec.best_epoch else None
            self.finished.append((rec, state, mask))
        if len(keep) < self.pop.n_members:
            keep_t = torch.tensor(keep, dtype=torch.long, device=self.best_correct.device)
            self.pop.select(keep_t)
            self.optimizer.select(keep_t)
            self.steps.reset()
            self.best_params = [b[keep_t] for b in self.best_params]
            self.best_correct = self.best_correct[keep_t]
            self.records = [self.records[m] for m in keep]

    def results(self, device_name: str, precision: str):
        """(index into configs, TrialResult) of every member, once all have stopped."""
        wall = self.wall_s
        total_epochs = sum(len(rec.train_loss) for rec, _, _ in self.finished)
        for rec, state, mask in self.finished:
            yield (
                rec.index,
                TrialResult(
                    config=self.configs[rec.index],
                    outcome=rec.outcome,
                    train_loss=rec.train_loss,
                    eval_loss=rec.eval_loss,
                    eval_accuracy=rec.eval_accuracy,
                    best_epoch=rec.best_epoch,
                    wall_s=wall * len(rec.train_loss) / total_epochs,
                    device=device_name,
                    dtype=precision,
                    state_dict=state,
                    eval_correct=mask,
                    engine=engine_version(self.optimizer_step),
                ),
            )


@contextlib.contextmanager
def on_stream(stream: torch.cuda.Stream | None):
    """Queue the block's device work on `stream` (CUDA), or where it would go anyway (None)."""
    if stream is None:
        yield
        return
    with torch.cuda.stream(stream):
        yield


@torch.no_grad()
def _evaluate_population(pop: StackedPopulation, split: Split):
    """(mean loss (M,), number correct (M,), correct mask (M, N)) of every member on `split`,
    in chunks."""
    widest = max(pop.configs[0].layer_sizes)
    chunk = max(256, _EVAL_CHUNK_ELEMENTS // (pop.n_members * widest))
    # Each image's loss is kept and summed once at the end: chunk sizes depend on M, and a sum
    # per chunk would make a member's loss depend on its population's size.
    losses = torch.empty(pop.n_members, len(split), dtype=split.x.dtype, device=split.x.device)
    correct = torch.zeros(pop.n_members, dtype=torch.long, device=split.x.device)
    mask = torch.empty(pop.n_members, len(split), dtype=torch.bool, device=split.x.device)
    for start in range(0, len(split), chunk):
        x, y = split.x[start : start + chunk], split.y[start : start + chunk]
        logits = pop.forward(x)  # (M, C, 10)
        log_probs = torch.log_softmax(logits, dim=-1)
        target = y.expand(pop.n_members, -1).unsqueeze(-1)
        losses[:, start : start + len(y)] = -log_probs.gather(-1, target).squeeze(-1)
        hit = logits.argmax(dim=-1) == y  # (M, C)
        mask[:, start : start + len(y)] = hit
        correct += hit.sum(dim=1)
    return losses.sum(dim=1) / len(split), correct, mask


def _snapshot(best_params, params, improved: list[bool]) -> None:
    """Copy the weights of members whose accuracy improved into the best-epoch store."""
    if not any(improved):
        return
    rows = torch.tensor([m for m, flag in enumerate(improved) if flag], device=params[0].device)
    for best, current in zip(best_params, params, strict=True):
        best[rows] = current[rows]


def _stop_reason(rec: _MemberRecord, config: Config, epoch: int, pruned: set[int]):
    """The outcome if this member stops after `epoch`, else None."""
    if not math.isfinite(rec.train_loss[-1]):
        return Outcome.DIVERGED
    if rec.index in pruned:
        return Outcome.PRUNED
    if rec.epochs_since_best >= config.patience or epoch >= config.max_epochs:
        return Outcome.COMPLETE
    return None
