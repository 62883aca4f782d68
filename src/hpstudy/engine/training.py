"""Train many configurations at once: group them into populations, run, stop each on its own.

    >>> results = train(configs, train_split, eval_split, device="cpu")
    >>> results[0].best_accuracy, results[0].best_epoch, results[0].outcome
    (0.861, 7, <Outcome.COMPLETE: 'complete'>)

Configurations that share layer sizes and batch size form one population. Every epoch each member
trains on the batches of `batch_order(seed, epoch)`, is evaluated on the evaluation split, and
stops on its own when its early-stopping patience runs out, its max_epochs is reached, its loss
diverges, or the `on_epoch` callback prunes it. Stopped members are dropped from the stacked
tensors, so they stop costing compute. The engine is pure: no printing, no files.

Populations run one after another, or (on CUDA by default) together: as many as fit in memory
advance in lockstep, each on its own stream, with one host sync per epoch for all of them
(`_advance`; one population's epoch is `population_run.PopulationRun`). Either way a member's
arithmetic is the same, so its result is too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from hpstudy.config.config import Config
from hpstudy.config.cost import n_parameters
from hpstudy.engine.flops import training_numerics
from hpstudy.engine.optimizers import check_step
from hpstudy.engine.phases import PhaseCallback, PhaseClock
from hpstudy.engine.planning import (
    max_members,
    memory_budget,
    n_admitted,
    population_bytes,
    split_group,
)
from hpstudy.engine.population_run import PopulationRun, on_stream
from hpstudy.engine.results import TrialResult
from hpstudy.engine.splits import Split
from hpstudy.engine.steps import graphs_supported


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
ResultsCallback = Callable[[list[tuple[int, TrialResult]]], None]  # one population's results


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


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
    on_results: ResultsCallback | None = None,
    optimizer_step: str = "grouped",
    on_phase: PhaseCallback | None = None,
    concurrent_populations: bool | None = None,
) -> list[TrialResult]:
    """Train every configuration; results come back in the order of `configs`.

    `on_results([(i, result), ...])` receives a population's results (`i` indexes `configs`)
    together, as soon as that population has finished and before the next epoch of any
    population starts: a caller that stores them there (in one transaction) loses only the
    running populations' work when the call is interrupted.
    `max_population` caps the members of one population (default: what fits in memory).
    `tf32=True` (CUDA, float32 only) lets matmuls use TensorFloat-32: faster on Ampere and
    later, opt-in, and recorded in each result's dtype as "float32+tf32".
    `cuda_graphs=True` (CUDA only) replays each training step from a CUDA graph instead of
    launching its kernels one by one (see `hpstudy.engine.steps`); results do not change.
    `optimizer_step="fused"` updates every rule with one op sequence per tensor
    (`hpstudy.engine.fused`) instead of one update per rule group; float32 bits differ from the
    default "grouped", so each result records its `engine` version.
    `on_phase(name, seconds)` is told where the time goes (`hpstudy.engine.phases`).
    `concurrent_populations=True` advances populations together, as many as fit in memory
    (`planning.n_admitted`), each on its own CUDA stream with one host sync per epoch for all;
    False runs them one after another; None (default) is True on CUDA and False on the CPU,
    where running together buys nothing. Results do not change.
    """
    device = torch.device(device)
    if tf32 and (device.type != "cuda" or dtype != torch.float32):
        raise ValueError(f"tf32 needs a CUDA device and float32, got {device} and {dtype}")
    if cuda_graphs and not graphs_supported(device):
        raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
    check_step(optimizer_step)
    together = device.type == "cuda" if concurrent_populations is None else concurrent_populations
    options = _TrainOptions(on_epoch, max_population, tf32, cuda_graphs, on_results,
                            optimizer_step, on_phase, bool(together))  # fmt: skip
    with training_numerics(tf32):
        return _train(configs, train, evaluation, device, dtype, options)


@dataclass(frozen=True)
class _TrainOptions:
    on_epoch: EpochCallback | None
    max_population: int | None
    tf32: bool
    cuda_graphs: bool
    on_results: ResultsCallback | None = None
    optimizer_step: str = "grouped"
    on_phase: PhaseCallback | None = None
    together: bool = False  # populations advance together (train's concurrent_populations)


def _train(configs, train, evaluation, device, dtype, options: _TrainOptions):
    clock = PhaseClock(options.on_phase, device)
    train, evaluation = train.to(device, dtype), evaluation.to(device, dtype)
    populations = plan_populations(
        configs, device=device, dtype=dtype, max_size=options.max_population,
        n_eval=len(evaluation), optimizer_step=options.optimizer_step,
    )  # fmt: skip
    clock.mark("planning")
    budget = memory_budget(device)  # measured before any population holds memory
    results: list[TrialResult | None] = [None] * len(configs)
    precision = str(dtype).removeprefix("torch.") + ("+tf32" if options.tf32 else "")
    work = [_population_work([configs[i] for i in indices]) for indices in populations]
    ctx = _RunContext(len(populations), time.perf_counter(), options.on_epoch,
                      describe_device(device), precision, _WorkTracker(work), clock,
                      options.cuda_graphs, options.optimizer_step)  # fmt: skip
    if options.together:
        finished = _train_together(configs, populations, train, evaluation, ctx, budget)
    else:
        finished = (
            population
            for p, indices in enumerate(populations)
            for population in _train_population(configs, indices, train, evaluation, ctx, p)
        )
    for population in finished:
        for result_index, result in population:
            results[result_index] = result
        if options.on_results is not None:
            clock.mark("other")
            options.on_results(population)
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
    optimizer_step: str = "grouped",
) -> list[list[int]]:
    """Indices of `configs` grouped into populations: one shape and batch size each, and no
    more members than fit in memory (or `max_size`) with `n_eval` evaluation images and the
    `optimizer_step`'s buffers."""
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        shape = (config.layer_sizes, config.conv_layers, config.kernel_size, config.batch_norm)
        groups.setdefault((shape, config.batch_size), []).append(i)
    populations = []
    for indices in groups.values():
        limit = max_members(configs[indices[0]], device=device, dtype=dtype, n_eval=n_eval,
                            optimizer_step=optimizer_step)  # fmt: skip
        populations += split_group(indices, min(limit, max_size or limit))
    return populations


def _population_work(configs: Sequence[Config]) -> float:
    """Upper bound on a population's training work: members x parameters x max epochs."""
    return float(n_parameters(configs[0]) * len(configs) * max(c.max_epochs for c in configs))


@dataclass
class _WorkTracker:
    """Work (members x parameters x epochs) done in one train() call, and the work expected.
    Populations may run together: each one started has its own share done."""

    upper: list[float]  # per population: members x parameters x max_epochs
    done: float = 0.0
    stopped_share: float = 0.0  # sum over stopped members of epochs run / max_epochs
    n_stopped: int = 0
    # per population started: the share of its max_epochs run (1 once it finished)
    fraction: dict[int, float] = field(default_factory=dict)
    # per population running: (epoch, max_epochs, live members, parameters per member)
    running: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)

    def epoch_done(self, n_members: int, n_params: int) -> None:
        self.done += float(n_members * n_params)

    def member_stopped(self, epochs: int, max_epochs: int) -> None:
        self.stopped_share += epochs / max_epochs
        self.n_stopped += 1

    def population_finished(self, p: int) -> None:
        self.fraction[p] = 1.0
        self.running.pop(p, None)

    def progress(self, p: int, epoch: int, max_epochs: int) -> float:
        """Share of the upper bound done once population `p` ran `epoch` epochs: finished
        populations whole, running ones by their epochs. Never decreases."""
        self.fraction[p] = min(1.0, epoch / max_epochs)
        done = sum(self.upper[q] * f for q, f in self.fraction.items())
        return done / sum(self.upper)

    def expected_progress(self, p: int, epoch: int, max_epochs: int, n_alive: int,
                          n_params: int) -> float:  # fmt: skip
        self.running[p] = (epoch, max_epochs, n_alive, n_params)
        share = self.stopped_share / self.n_stopped if self.n_stopped else 1.0
        left_running = 0.0
        for epoch_q, max_q, alive_q, params_q in self.running.values():
            epochs_left = min(max(1.0, share * max_q - epoch_q), max_q - epoch_q)
            left_running += alive_q * params_q * epochs_left
        waiting = (u for q, u in enumerate(self.upper)
                   if q not in self.running and q not in self.fraction)  # fmt: skip
        left = left_running + share * sum(waiting)
        return self.done / (self.done + left) if self.done + left else 1.0


@dataclass(frozen=True)
class _RunContext:
    """What every population of one train() call shares."""

    n_populations: int
    started: float  # perf_counter() when train() began
    on_epoch: EpochCallback | None
    device_name: str
    precision: str  # "float32", "float64" or "float32+tf32"
    tracker: _WorkTracker
    clock: PhaseClock
    cuda_graphs: bool = False
    optimizer_step: str = "grouped"  # optimizers.OPTIMIZER_STEPS


def _start(configs, indices, train: Split, evaluation: Split, ctx: _RunContext, p: int,
           stream=None) -> PopulationRun:  # fmt: skip
    run = PopulationRun(configs, indices, train, evaluation, index=p, stream=stream,
                        cuda_graphs=ctx.cuda_graphs, optimizer_step=ctx.optimizer_step)  # fmt: skip
    ctx.clock.mark("planning")
    return run


def _train_population(configs, indices, train: Split, evaluation: Split, ctx: _RunContext,
                      p: int):  # fmt: skip
    """Population `p` alone, epoch by epoch: the list of (config index, result) of its members
    once all have stopped."""
    runs = [_start(configs, indices, train, evaluation, ctx, p)]
    while runs:
        yield from _advance(runs, ctx)


def _train_together(configs, populations, train: Split, evaluation: Split, ctx: _RunContext,
                    budget: float):  # fmt: skip
    """Every population, advancing in lockstep as many at a time as fit `budget` bytes: a
    population starts (in order) when those running leave room for it, at an epoch boundary."""
    device, dtype, n_eval = train.x.device, train.x.dtype, len(evaluation)

    def need(indices, n_members: int) -> int:
        return population_bytes(configs[indices[0]], n_members, dtype, n_eval,
                                optimizer_step=ctx.optimizer_step)  # fmt: skip

    waiting = [(p, indices, need(indices, len(indices))) for p, indices in enumerate(populations)]
    runs: list[PopulationRun] = []
    try:
        while waiting or runs:
            held = sum(need(populations[r.index], r.pop.n_members) for r in runs)
            n_new = n_admitted(held, [bytes_ for _, _, bytes_ in waiting], budget)
            for p, indices, _ in waiting[:n_new]:
                stream = _new_stream(device)
                runs.append(_start(configs, indices, train, evaluation, ctx, p, stream))
            del waiting[:n_new]
            yield from _advance(runs, ctx)
    except BaseException:  # an interrupt, a caller's error, or the caller closing us early
        # Their tensors are freed as the error unwinds: first let the work queued on their
        # streams end, or a later allocation could take memory a kernel still writes.
        _wait_for(runs)
        raise


def _advance(runs: list[PopulationRun], ctx: _RunContext):
    """One epoch of every population in `runs`, with one host sync for all; a population whose
    last member stopped leaves `runs`, and its results are yielded (one list per population)
    before any epoch starts."""
    started = time.perf_counter()
    streams = [r.stream for r in runs if r.stream is not None]
    current = _current_stream(streams[0]) if streams else None
    for stream in streams:  # after the bookkeeping (selections, snapshots) queued before
        stream.wait_stream(current)
    captured = sum(r.steps.capture_s for r in runs)
    # Every epoch begins before any finishes: a capture syncs the whole device, and then
    # waits for a few steps of the others rather than for their epochs.
    for run in runs:
        with on_stream(run.stream):
            run.begin_training()
    for run in runs:
        with on_stream(run.stream):
            run.finish_training()
    ctx.clock.mark("training", capture_s=sum(r.steps.capture_s for r in runs) - captured)
    for run in runs:
        with on_stream(run.stream):
            run.launch_evaluation()
    for stream in streams:
        current.wait_stream(stream)
    # One host sync per epoch for every population: all above stayed on the device.
    for run, stats in zip(runs, _to_host([r.stats for r in runs]), strict=True):
        run.record(stats)
    ctx.clock.mark("evaluation")
    # The wave's time so far, shared by work (members x parameters); each one's bookkeeping
    # below is its own. Shares add up to the call's time, which run.json's costs sum.
    wave_s, work = time.perf_counter() - started, [r.pop.n_members * r.n_params for r in runs]
    for run, run_work in zip(runs, work, strict=True):
        ctx.tracker.epoch_done(run.pop.n_members, run.n_params)
        run.wall_s += wave_s * run_work / sum(work)
    for run in list(runs):
        started = time.perf_counter()
        run.stop(_ask_callback(ctx, run), ctx.tracker)
        run.wall_s += time.perf_counter() - started
        if run.done:
            runs.remove(run)
            ctx.tracker.population_finished(run.index)
            yield list(run.results(ctx.device_name, ctx.precision))
    ctx.clock.mark("other")


def _wait_for(runs: list[PopulationRun]) -> None:
    """Block until the work queued on these populations' streams has run (never raises: it
    runs while another error unwinds)."""
    for run in runs:
        if run.stream is not None:
            with contextlib.suppress(Exception):
                run.stream.synchronize()


def _new_stream(device: torch.device):
    """A stream of its own for a population on CUDA; None elsewhere (the work runs in order)."""
    return torch.cuda.Stream(device) if device.type == "cuda" else None


def _current_stream(stream):
    """The stream current on `stream`'s device: where the bookkeeping runs."""
    return torch.cuda.current_stream(stream.device)


def _to_host(stats: list[torch.Tensor]) -> list[list[list[float]]]:
    """Each (3, M) tensor of `stats` as 3 lists, moved to the host in one copy."""
    if len(stats) == 1:
        return [stats[0].tolist()]
    rows = torch.cat(stats, dim=1).tolist()
    out, start = [], 0
    for tensor in stats:
        end = start + tensor.shape[1]
        out.append([row[start:end] for row in rows])
        start = end
    return out


def _ask_callback(ctx: _RunContext, run: PopulationRun) -> set[int]:
    if ctx.on_epoch is None:
        return set()
    records, tracker = run.records, ctx.tracker
    event = EpochEvent(
        population=run.index,
        n_populations=ctx.n_populations,
        epoch=run.epoch,
        config_indices=[rec.index for rec in records],
        eval_accuracy=[rec.eval_accuracy[-1] for rec in records],
        n_members=len(records),
        elapsed_s=time.perf_counter() - ctx.started,
        progress=tracker.progress(run.index, run.epoch, run.max_epochs),
        expected_progress=tracker.expected_progress(
            run.index, run.epoch, run.max_epochs, len(records), run.n_params
        ),
    )
    return set(ctx.on_epoch(event) or ())
