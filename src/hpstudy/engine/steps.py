"""Training steps of one population: launched op by op, or replayed from a CUDA graph.

    >>> steps = StepRunner(pop, optimizer, train_split, cuda_graph=True)
    >>> mean_loss = steps.epoch(1)            # (M,) on the device
    >>> pop.select(keep); optimizer.select(keep); steps.reset()

A step of a large population on a GPU is short, and Python launching its ~100 kernels one by one
can take longer than the GPU takes to run them. A CUDA graph records the kernels of one step once
and replays them with one call. The graph reads its batch from static buffers, so each step is
one small copy of the batch indices plus one replay. Replaying runs the same kernels on the same
addresses as the eager step, so results do not change; the GPU tests check that bit for bit.
Augmented steps copy their draws into static buffers too. Dropout members draw their masks from
their own generators, which the graph registers (`CUDAGraph.register_generator_state`): each
replay advances them as an eager step would, and reseeding them in place for a new epoch reaches
the graph. Where torch lacks that call, steps of dropout members run eagerly.

What a graph fixes at capture time (tensor addresses, member ranges, batch shape) changes when
members are selected away, so `reset()` drops the graph and the next full batch captures a new
one. The last, shorter batch of an epoch runs eagerly.

An epoch is `begin_epoch` (set-up, and the warm-ups and capture when a graph is due) then
`finish_epoch` (the rest). Each population owns its graph and the graph's memory pool; a graph
replays on whatever stream is current, so a population trained on its own stream replays
there. Capturing synchronises the whole device (`torch.cuda.graph`), which is why populations
that run together begin all their epochs before finishing any (`training._advance`).
"""

from __future__ import annotations

import time

import torch

from hpstudy.engine.augment import Draws, augment, population_draws
from hpstudy.engine.optimizers import StackedOptimizer
from hpstudy.engine.populations import StackedPopulation
from hpstudy.engine.splits import Split, batch_order, to_device

# Eager steps before a capture, on a side stream as CUDA graphs require: they initialise cuBLAS
# workspaces and the caching allocator for these shapes. They are real training steps.
_WARMUP_STEPS = 2


class StepRunner:
    """Runs the training steps of one population, epoch by epoch."""

    def __init__(
        self,
        pop: StackedPopulation,
        optimizer: StackedOptimizer,
        train: Split,
        *,
        cuda_graph: bool = False,
    ):
        if cuda_graph and not graphs_supported(train.x.device):
            raise ValueError(f"CUDA graphs need a CUDA device, got {train.x.device}")
        self.pop, self.optimizer, self.train = pop, optimizer, train
        self.cuda_graph = cuda_graph
        self._scheduled = any(c.schedule != "constant" for c in pop.configs)
        self.capture_s = 0.0  # time spent capturing graphs (warm-up steps excluded)
        self.n_captures = 0
        self._epoch: _EpochSteps | None = None  # between begin_epoch and finish_epoch
        self.reset()

    def reset(self) -> None:
        """Forget what depends on the members; call after the population's select."""
        self._graph = None  # frees the old graph's memory pool
        self._warm_steps = 0
        self._idx: torch.Tensor | None = None  # the graph's static batch indices
        self._draws: Draws | None = None  # and its static augmentation draws
        self._loss_sum = torch.zeros(
            self.pop.n_members, dtype=self.train.x.dtype, device=self.train.x.device
        )

    def epoch(self, epoch: int, *, max_steps: int | None = None) -> torch.Tensor:
        """One epoch (or its first `max_steps` steps) for every member.

        Returns the mean batch loss per member (M,), on the device; nothing here syncs with
        the host (but a capture, which waits for the whole device).
        """
        self.begin_epoch(epoch, max_steps=max_steps)
        return self.finish_epoch()

    def begin_epoch(self, epoch: int, *, max_steps: int | None = None) -> None:
        """Set up `epoch` and, with CUDA graphs, run its steps up to and including a capture
        (the warm-ups and the captured step); without a capture to make, no step runs here.

        A capture synchronises the whole device, so a caller that trains several populations
        together begins every population's epoch before finishing any: a capture then waits
        for a few steps of the others, not for their whole epochs.
        """
        pop, train = self.pop, self.train
        n, batch_size = len(train), pop.configs[0].batch_size
        pop.start_epoch(epoch)
        self.optimizer.start_epoch(epoch)
        if self._graph is not None and self._scheduled:
            self.reset()  # a graph holds Adam's learning rates as the numbers it captured
        seeds = [c.seed for c in pop.configs]
        unique = sorted(set(seeds))
        orders = {s: to_device(batch_order(s, epoch, n), train.x.device) for s in unique}
        # (n,): one batch broadcast to every member, or (M, n): row m is member m's order.
        order = orders[unique[0]] if len(unique) == 1 else torch.stack([orders[s] for s in seeds])
        draws = population_draws(pop.configs, epoch, n, train.x.device)
        graphable = self.cuda_graph and (not pop.has_dropout or graphs_replay_generators())
        self._loss_sum.zero_()
        starts = range(0, n, batch_size)[:max_steps]
        self._epoch = _EpochSteps(order, draws, graphable, batch_size, list(starts))
        while self._graph is None and self._epoch.next_is_graphed():
            self._run_step(*self._epoch.pop())

    def finish_epoch(self) -> torch.Tensor:
        """Run the rest of the epoch begun by `begin_epoch`; the mean batch loss per member
        (M,), on the device."""
        steps, self._epoch = self._epoch, None
        while steps.left:
            self._run_step(*steps.pop())
        return self._loss_sum / steps.n_steps

    def _run_step(self, idx: torch.Tensor, draws: Draws | None, graphed: bool) -> None:
        if graphed:
            self._graphed_step(idx, draws)
        else:
            self._eager_step(idx, draws)

    def _eager_step(self, idx: torch.Tensor, draws: Draws | None = None) -> None:
        train_step(self.pop, self.optimizer, self.train, idx, self._loss_sum, draws)

    def _graphed_step(self, idx: torch.Tensor, draws: Draws | None) -> None:
        if self._graph is not None:
            self._idx.copy_(idx)
            if draws is not None:
                self._draws.copy_(draws)
            self._graph.replay()
        elif self._warm_steps < _WARMUP_STEPS:
            self._warm_steps += 1
            on_side_stream(lambda: self._eager_step(idx, draws))
        else:
            self._idx = idx.clone()
            self._draws = None if draws is None else draws.clone()
            started = time.perf_counter()
            # Capturing records the step without running it; the replay below runs it.
            self._graph = capture_graph(lambda: self._eager_step(self._idx, self._draws),
                                        self.pop.dropout_generators)  # fmt: skip
            self.capture_s += time.perf_counter() - started
            self.n_captures += 1
            self._graph.replay()


class _EpochSteps:
    """The steps of an epoch not yet run: its batch order, draws and batch starts."""

    def __init__(self, order, draws: Draws | None, graphable: bool, batch_size: int, starts):
        self.order, self.draws, self.graphable = order, draws, graphable
        self.batch_size, self.starts, self.n_steps = batch_size, starts, len(starts)
        self.next = 0

    @property
    def left(self) -> bool:
        return self.next < len(self.starts)

    def next_is_graphed(self) -> bool:
        """Whether a step is left and it replays (or captures) a graph: a full batch."""
        if not (self.left and self.graphable):
            return False
        return self._idx(self.starts[self.next]).shape[-1] == self.batch_size

    def pop(self) -> tuple[torch.Tensor, Draws | None, bool]:
        """The next step's (batch indices, draws, whether graphed); the step counts as run."""
        start = self.starts[self.next]
        self.next += 1
        idx = self._idx(start)
        draws = None if self.draws is None else self.draws.slice(start, start + self.batch_size)
        return idx, draws, self.graphable and idx.shape[-1] == self.batch_size

    def _idx(self, start: int) -> torch.Tensor:
        return self.order[..., start : start + self.batch_size]


def train_step(
    pop: StackedPopulation,
    optimizer: StackedOptimizer,
    train: Split,
    idx: torch.Tensor,
    loss_sum: torch.Tensor,
    draws: Draws | None = None,
) -> None:
    """One step on the batch at `idx`: (B,) shared by all members, or (M, B) one row each,
    its images augmented by `draws` when given.

    Adds each member's batch loss to `loss_sum` (M,). Launches device work only, so that it can
    be captured in a CUDA graph.
    """
    # index_select on a flat index: several times faster than advanced indexing on CPU.
    flat = idx.reshape(-1)
    x = train.x.index_select(0, flat).view(*idx.shape, -1)
    y = train.y.index_select(0, flat).view(idx.shape)
    if draws is not None:  # per-member draws make a shared batch (M, B, 784)
        x = augment(x, draws, pop.configs[0].image_side)
    if y.dim() == 1:  # a shared (B, 784) batch broadcasts; labels need one row per member
        y = y.expand(pop.n_members, -1)
    loss_sum += pop.loss_and_grads(x, y)
    optimizer.step()


def graphs_supported(device: torch.device) -> bool:
    return device.type == "cuda"


def graphs_replay_generators() -> bool:
    """Whether this torch's CUDA graphs can replay draws from a member's own generator. Probed
    on an H200 with torch 2.11 (benchmarks/cnn_gpu_probe.py): replays equal the eager draws,
    also after the generator is reseeded between replays."""
    return hasattr(torch.cuda.CUDAGraph, "register_generator_state")


def capture_graph(step, generators=()) -> torch.cuda.CUDAGraph:
    """Record `step()` as a CUDA graph, registering the generators it draws from (tests on CPU
    replace this with a stand-in)."""
    graph = torch.cuda.CUDAGraph()
    for generator in generators:
        graph.register_generator_state(generator)
    with torch.cuda.graph(graph):
        step()
    return graph


def on_side_stream(step) -> None:
    """Run `step()` on a side stream ordered after and before the current one (CUDA only)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
    torch.cuda.current_stream().wait_stream(stream)
