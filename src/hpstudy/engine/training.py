"""Train many configurations at once: group them into populations, run, stop each on its own.

    >>> results = train(configs, train_split, eval_split, device="cpu")
    >>> results[0].best_accuracy, results[0].best_epoch, results[0].outcome
    (0.861, 7, <Outcome.COMPLETE: 'complete'>)

Configurations that share layer sizes and batch size form one population. Every epoch each member
trains on the batches of `batch_order(seed, epoch)`, is evaluated on the evaluation split, and
stops on its own when its early-stopping patience runs out, its max_epochs is reached, its loss
diverges, or the `on_epoch` callback prunes it. Stopped members are dropped from the stacked
tensors, so they stop costing compute. The engine is pure: no printing, no files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hpstudy.config.config import Config
from hpstudy.config.cost import n_parameters
from hpstudy.engine.flops import training_numerics
from hpstudy.engine.optimizers import StackedOptimizer, check_step, engine_version
from hpstudy.engine.phases import PhaseCallback, PhaseClock
from hpstudy.engine.planning import max_members, split_group
from hpstudy.engine.population import member_order_key
from hpstudy.engine.populations import StackedPopulation, population_for
from hpstudy.engine.results import Outcome, TrialResult
from hpstudy.engine.splits import Split
from hpstudy.engine.steps import StepRunner, graphs_supported

_EVAL_CHUNK_ELEMENTS = 2**25  # activations per evaluation chunk (128 MiB of float32)


@dataclass(frozen=True)
class EpochEvent:
    """Progress after one epoch of one population; `on_epoch` receives it."""

    population: int  # 0-based index of the population in this train() call
    n_populations: int
    epoch: int  # 1-based
    config_indices: list[int]  # indices into train()'s configs of members that ran this epoch
    eval_accuracy: list[float]  # their evaluation accuracy, parallel to config_indices
    n_members: int
    elapsed_s: float  # since train() began
    # Share of this call's work done, counting each population as members x parameters x
    # max_epochs: an upper bound on the work, so an ETA from it errs long (early stopping).
    progress: float
    # The same share against the work expected: what is not yet trained is scaled by the share
    # of max_epochs that members which already stopped ran (1 until some have stopped).
    expected_progress: float = 0.0


EpochCallback = Callable[[EpochEvent], Iterable[int] | None]


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


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


def train(
    configs: Sequence[Config],
    train: Split,
    evaluation: Split,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    on_epoch: EpochCallback | None = None,
    max_population: int | None = None,
    tf32: bool = False,
    cuda_graphs: bool = False,
    on_result: Callable[[int, TrialResult], None] | None = None,
    optimizer_step: str = "grouped",
    on_phase: PhaseCallback | None = None,
) -> list[TrialResult]:
    """Train every configuration; results come back in the order of `configs`.

    `on_result(i, result)` receives each configuration's result as soon as its population has
    finished, before the next population starts: a caller that stores it there loses only the
    running population's work when the call is interrupted.
    `max_population` caps the members of one population (default: what fits in memory).
    `tf32=True` (CUDA, float32 only) lets matmuls use TensorFloat-32: faster on Ampere and
    later, opt-in, and recorded in each result's dtype as "float32+tf32".
    `cuda_graphs=True` (CUDA only) replays each training step from a CUDA graph instead of
    launching its kernels one by one (see `hpstudy.engine.steps`); results do not change.
    `optimizer_step="fused"` updates every rule with one op sequence per tensor
    (`hpstudy.engine.fused`) instead of one update per rule group; float32 bits differ from the
    default "grouped", so each result records its `engine` version.
    `on_phase(name, seconds)` is told where the time goes (`hpstudy.engine.phases`).
    """
    device = torch.device(device)
    if tf32 and (device.type != "cuda" or dtype != torch.float32):
        raise ValueError(f"tf32 needs a CUDA device and float32, got {device} and {dtype}")
    if cuda_graphs and not graphs_supported(device):
        raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
    check_step(optimizer_step)
    options = _TrainOptions(on_epoch, max_population, tf32, cuda_graphs, on_result,
                            optimizer_step, on_phase)  # fmt: skip
    with training_numerics(tf32):
        return _train(configs, train, evaluation, device, dtype, options)


@dataclass(frozen=True)
class _TrainOptions:
    on_epoch: EpochCallback | None
    max_population: int | None
    tf32: bool
    cuda_graphs: bool
    on_result: Callable[[int, TrialResult], None] | None = None
    optimizer_step: str = "grouped"
    on_phase: PhaseCallback | None = None


def _train(configs, train, evaluation, device, dtype, options: _TrainOptions):
    clock = PhaseClock(options.on_phase, device)
    train, evaluation = train.to(device, dtype), evaluation.to(device, dtype)
    populations = plan_populations(
        configs, device=device, dtype=dtype, max_size=options.max_population,
        n_eval=len(evaluation),
    )  # fmt: skip
    clock.mark("planning")
    results: list[TrialResult | None] = [None] * len(configs)
    precision = str(dtype).removeprefix("torch.") + ("+tf32" if options.tf32 else "")
    work = [_population_work([configs[i] for i in indices]) for indices in populations]
    tracker = _WorkTracker(work)
    started = time.perf_counter()
    for p, indices in enumerate(populations):
        context = _RunContext(
            p, len(populations), started, options.on_epoch, describe_device(device), precision,
            work_before=sum(work[:p]) / sum(work), work_share=work[p] / sum(work),
            cuda_graphs=options.cuda_graphs, tracker=tracker, optimizer_step=options.optimizer_step,
            clock=clock,
        )  # fmt: skip
        for result_index, result in _train_population(configs, indices, train, evaluation, context):
            results[result_index] = result
            if options.on_result is not None:
                clock.mark("other")
                options.on_result(result_index, result)
                clock.mark("results")
    clock.mark("other")
    return results


def plan_populations(
    configs: Sequence[Config],
    *,
    device: torch.device,
    dtype: torch.dtype,
    max_size: int | None = None,
    n_eval: int = 10_000,
) -> list[list[int]]:
    """Indices of `configs` grouped into populations: one shape and batch size each, and no
    more members than fit in memory (or `max_size`) with `n_eval` evaluation images."""
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        shape = (config.layer_sizes, config.conv_layers, config.kernel_size, config.batch_norm)
        groups.setdefault((shape, config.batch_size), []).append(i)
    populations = []
    for indices in groups.values():
        limit = max_members(configs[indices[0]], device=device, dtype=dtype, n_eval=n_eval)
        populations += split_group(indices, min(limit, max_size or limit))
    return populations


def _population_work(configs: Sequence[Config]) -> float:
    """Upper bound on a population's training work: members x parameters x max epochs."""
    return float(n_parameters(configs[0]) * len(configs) * max(c.max_epochs for c in configs))


@dataclass
class _WorkTracker:
    """Work (members x parameters x epochs) done in one train() call, and the work expected."""

    upper: list[float]  # per population: members x parameters x max_epochs
    done: float = 0.0
    stopped_share: float = 0.0  # sum over stopped members of epochs run / max_epochs
    n_stopped: int = 0

    def epoch_done(self, n_members: int, n_params: int) -> None:
        self.done += float(n_members * n_params)

    def member_stopped(self, epochs: int, max_epochs: int) -> None:
        self.stopped_share += epochs / max_epochs
        self.n_stopped += 1

    def expected_progress(self, p: int, epoch: int, max_epochs: int, n_alive: int,
                          n_params: int) -> float:  # fmt: skip
        share = self.stopped_share / self.n_stopped if self.n_stopped else 1.0
        epochs_left = min(max(1.0, share * max_epochs - epoch), max_epochs - epoch)
        left_here = n_alive * n_params * epochs_left
        left = left_here + share * sum(self.upper[p + 1 :])
        return self.done / (self.done + left) if self.done + left else 1.0


@dataclass(frozen=True)
class _RunContext:
    population: int
    n_populations: int
    started: float
    on_epoch: EpochCallback | None
    device_name: str
    precision: str  # "float32", "float64" or "float32+tf32"
    work_before: float  # share of the call's work in earlier populations
    work_share: float  # share of this population
    cuda_graphs: bool = False
    tracker: _WorkTracker | None = None  # shared by every population of the call
    optimizer_step: str = "grouped"  # optimizers.OPTIMIZER_STEPS
    clock: PhaseClock | None = None  # shared by every population of the call


def _train_population(configs, indices, train: Split, evaluation: Split, ctx: _RunContext):
    order = sorted(indices, key=lambda i: member_order_key(configs[i]))
    pop = population_for([configs[i] for i in order], device=train.x.device, dtype=train.x.dtype)
    optimizer = StackedOptimizer(pop, step=ctx.optimizer_step)
    steps = StepRunner(pop, optimizer, train, cuda_graph=ctx.cuda_graphs)
    records = [_MemberRecord(i) for i in order]  # parallel to pop.configs
    best_params = [p.clone() for p in pop.state_tensors()]
    best_correct = torch.zeros(
        pop.n_members, len(evaluation), dtype=torch.bool, device=train.x.device
    )  # (M, N) at each member's best epoch
    finished: list[tuple[_MemberRecord, dict, np.ndarray | None]] = []
    max_epochs = max(c.max_epochs for c in pop.configs)
    clock = ctx.clock or PhaseClock(None, train.x.device)
    clock.mark("planning")
    started = time.perf_counter()
    epoch = 0
    while pop.n_members:
        epoch += 1
        captured = steps.capture_s
        train_loss = steps.epoch(epoch)
        clock.mark("training", capture_s=steps.capture_s - captured)
        eval_loss, eval_correct, correct_mask = _evaluate_population(pop, evaluation)
        # One host sync per epoch: every per-step quantity above stayed on the device.
        accuracy = eval_correct.double() / len(evaluation)  # exact counts, float64 ratio
        stats = torch.stack([train_loss.double(), eval_loss.double(), accuracy]).tolist()
        per_member = zip(*stats, strict=True)  # (train loss, eval loss, accuracy) per member
        improved = [rec.record_epoch(*row) for rec, row in zip(records, per_member, strict=True)]
        _snapshot(best_params, pop.state_tensors(), improved)
        _snapshot([best_correct], [correct_mask], improved)
        clock.mark("evaluation")
        n_params = n_parameters(pop.configs[0])
        if ctx.tracker is not None:
            ctx.tracker.epoch_done(pop.n_members, n_params)
        pruned = _ask_callback(ctx, epoch, max_epochs, records, n_params)
        keep = []
        for m, (rec, config) in enumerate(zip(records, pop.configs, strict=True)):
            rec.outcome = _stop_reason(rec, config, epoch, pruned)
            if rec.outcome is None:
                keep.append(m)
            else:
                if ctx.tracker is not None:
                    ctx.tracker.member_stopped(epoch, max_epochs)
                usable = rec.best_epoch and rec.outcome is not Outcome.DIVERGED
                state = pop.state_dict_from(best_params, m) if usable else None
                mask = best_correct[m].cpu().numpy() if rec.best_epoch else None
                finished.append((rec, state, mask))
        if len(keep) < pop.n_members:
            keep_t = torch.tensor(keep, dtype=torch.long, device=train.x.device)
            pop.select(keep_t)
            optimizer.select(keep_t)
            steps.reset()
            best_params = [b[keep_t] for b in best_params]
            best_correct = best_correct[keep_t]
            records = [records[m] for m in keep]
        clock.mark("other")
    wall = time.perf_counter() - started
    total_epochs = sum(len(rec.train_loss) for rec, _, _ in finished)
    for rec, state, mask in finished:
        yield (
            rec.index,
            TrialResult(
                config=configs[rec.index],
                outcome=rec.outcome,
                train_loss=rec.train_loss,
                eval_loss=rec.eval_loss,
                eval_accuracy=rec.eval_accuracy,
                best_epoch=rec.best_epoch,
                wall_s=wall * len(rec.train_loss) / total_epochs,
                device=ctx.device_name,
                dtype=ctx.precision,
                state_dict=state,
                eval_correct=mask,
                engine=engine_version(ctx.optimizer_step),
            ),
        )


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


def _ask_callback(ctx: _RunContext, epoch: int, max_epochs: int, records,
                  n_params: int) -> set[int]:  # fmt: skip
    if ctx.on_epoch is None:
        return set()
    event = EpochEvent(
        population=ctx.population,
        n_populations=ctx.n_populations,
        epoch=epoch,
        config_indices=[rec.index for rec in records],
        eval_accuracy=[rec.eval_accuracy[-1] for rec in records],
        n_members=len(records),
        elapsed_s=time.perf_counter() - ctx.started,
        progress=ctx.work_before + ctx.work_share * min(1.0, epoch / max_epochs),
        expected_progress=ctx.tracker.expected_progress(
            ctx.population, epoch, max_epochs, len(records), n_params
        )
        if ctx.tracker is not None
        else 0.0,
    )
    return set(ctx.on_epoch(event) or ())


def _stop_reason(rec: _MemberRecord, config: Config, epoch: int, pruned: set[int]):
    """The outcome if this member stops after `epoch`, else None."""
    if not math.isfinite(rec.train_loss[-1]):
        return Outcome.DIVERGED
    if rec.index in pruned:
        return Outcome.PRUNED
    if rec.epochs_since_best >= config.patience or epoch >= config.max_epochs:
        return Outcome.COMPLETE
    return None
