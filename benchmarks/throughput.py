"""The engine's throughput on one device, and the bit contract (issue 29, items 5 and 6).

    python3 benchmarks/throughput.py steps --device cuda --cuda-graphs     # T1-T5 at M 1,5,25,75
    python3 benchmarks/throughput.py profile --device cuda --cuda-graphs   # T4 and T5 at M 75
    python3 benchmarks/throughput.py bits --device cuda --cuda-graphs [--dtype tf32]
    python3 benchmarks/throughput.py concurrent --device cuda --members 75 --max-epochs 3
    python3 benchmarks/throughput.py steps --topologies T1 --members 1,2 --steps 3 --rounds 1 \
        --limit-train 640 --threads 1                                    # small, on the CPU

- `steps`: ms per training step (forward, backward, optimizer) of populations of M of the grid's
  configurations (a fixed shuffle of one topology's 75, so optimizers, learning rates and
  activations are mixed as in the grid; one seed, so one shared batch, as a grid seed trains),
  the median of interleaved rounds, and per topology the least-squares line ms = a + b * M.
- `profile`: where one population's step time goes (torch.profiler): device time by class
  (gemm/matmul, optimizer, activation, other), each kernel counted to the op that launched it in
  eager steps, and wall minus kernel time, eager and (`--cuda-graphs`) graphed. On the CPU, the
  CPU time of the ops stands in for kernel time.
- `bits`: the contract "a trial's result never depends on its neighbours": one member (the grid's
  configuration below, seed 42) trained `--steps` steps alone and as one of `--sizes` members
  (the grid's configurations of its topology over seeds 42-46: 375 is a whole topology of a
  five-seed grid, as `batch = 375` trains it); its parameters must be bit-identical
  (`torch.equal`) at every size, and so must every member shared with the largest population.
  Exit status 1 if any differs.
- `concurrent`: the grid's five topologies trained by `engine.train` with
  `concurrent_populations=False` and `=True`: wall time of each, and every result's state and
  lists compared bit for bit (exit status 1 if any differs). Skipped (exit 0) with one line when
  the engine has no such keyword.

Each prints the device, torch's version and the precision first. Timings never assert: read
them as measured on that machine then (docs/results.md).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import statistics
import sys
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from hpstudy.config.choices import TOPOLOGIES
from hpstudy.config.studyfile import load_study
from hpstudy.data import sources
from hpstudy.engine import describe_device, make_split, train
from hpstudy.engine.flops import synchronize, training_numerics
from hpstudy.engine.optimizers import StackedOptimizer
from hpstudy.engine.population import member_order_key
from hpstudy.engine.populations import population_for
from hpstudy.engine.steps import StepRunner
from hpstudy.tabulate.plans import grid_groups

GRID_SEEDS = 5  # seeds of the five-seed grid: 5 x 75 = 375 members of one topology
BITS_MEMBER = dict(optimizer="adam", lr=0.001, activation="relu")  # at the grid's first seed
_WARMUP_STEPS = 5  # eager steps, then (graphed) the capture: StepRunner warms up with 2
_OPTIMIZER_RANGE = "throughput::optimizer"  # profiler range around each optimizer step
GEMM_OPS = {"aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm", "aten::matmul",
            "aten::addbmm"}  # fmt: skip
_ACTIVATIONS = ("relu", "sigmoid", "tanh", "leaky_relu", "elu", "threshold")
ACTIVATION_OPS = {f"aten::{a}{suffix}" for a in _ACTIVATIONS for suffix in ("", "_", "_backward")}
CLASSES = ("gemm/matmul", "optimizer", "activation", "other")


# -- the grid's members ------------------------------------------------------------------------


def grid_members(topology: str, n_seeds: int = 1) -> list[list]:
    """The grid's configurations of `topology` (studies/grid.toml: 3 optimizers x 5 lrs x 5
    activations), one list per configuration with one config per seed (42, 43, ...)."""
    study = load_study("grid").replace(n_seeds=n_seeds)
    widths = TOPOLOGIES[topology]
    return [group for group in grid_groups(study) if group[0].topology == widths]


def mixed_members(topology: str, n: int) -> list:
    """`n` of the topology's 75 grid configurations (first seed), in a fixed shuffled order so
    that any prefix mixes optimizers, learning rates and activations; sorted for a population."""
    configs = [group[0] for group in grid_members(topology)]
    random.Random(0).shuffle(configs)
    return sorted(configs[:n], key=member_order_key)


# -- steps -------------------------------------------------------------------------------------


def warm_runner(configs, split, graphs: bool) -> StepRunner:
    """A StepRunner of `configs`, warmed up (and, with graphs, captured)."""
    pop = population_for(configs, device=split.x.device, dtype=split.x.dtype)
    runner = StepRunner(pop, StackedOptimizer(pop), split, cuda_graph=graphs)
    runner.epoch(1, max_steps=_WARMUP_STEPS)
    return runner


def time_steps(runner: StepRunner, n_steps: int) -> float:
    """Seconds per step over `n_steps` steps (the epoch's first batches; the epoch's start, one
    batch order of the training set and its copy to the device, is timed with them)."""
    device = runner.train.x.device
    synchronize(device)
    started = time.perf_counter()
    runner.epoch(2, max_steps=n_steps)
    synchronize(device)
    return (time.perf_counter() - started) / n_steps


def fit_line(xs, ys) -> tuple[float, float]:
    """(a, b) of the least-squares line y = a + b x (b = 0 for one point)."""
    if len(xs) < 2:
        return ys[0], 0.0
    b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(a), float(b)


def run_steps(args, split) -> int:
    mode = "graphed" if args.cuda_graphs else "eager"
    print(f"  ms per training step ({mode}; forward, backward, optimizer; batch 64), median of "
          f"{args.rounds} interleaved rounds of {args.steps} steps; fit ms = a + b*M")  # fmt: skip
    head = "".join(f"{f'M={m}':>9}" for m in args.members)
    print(f"  {'':8}{head}{'a ms':>9}{'b ms/M':>9}")
    for topology in args.topologies:
        runners = {m: warm_runner(mixed_members(topology, m), split, args.cuda_graphs)
                   for m in args.members}  # fmt: skip
        samples: dict[int, list[float]] = {m: [] for m in args.members}
        for _ in range(args.rounds):  # interleaved: a slow spell hits every M alike
            for m, runner in runners.items():
                samples[m].append(time_steps(runner, args.steps))
        ms = [1e3 * statistics.median(samples[m]) for m in args.members]
        a, b = fit_line(args.members, ms)
        print(f"  {topology:8}" + "".join(f"{v:9.3f}" for v in ms) + f"{a:9.3f}{b:9.4f}")
        del runners
    return 0


# -- profile -----------------------------------------------------------------------------------


class _Annotated:
    """A StackedOptimizer whose steps run inside a profiler range (so their ops can be told
    from the forward and backward ones); everything else reads through."""

    def __init__(self, optimizer: StackedOptimizer):
        self._optimizer = optimizer

    def step(self) -> None:
        with record_function(_OPTIMIZER_RANGE):
            self._optimizer.step()

    def __getattr__(self, name: str):
        return getattr(self._optimizer, name)


def op_class(event) -> str:
    """The class of an op from the op and the ops and ranges around it."""
    names = []
    while event is not None:
        names.append(event.name)
        event = event.cpu_parent
    if _OPTIMIZER_RANGE in names:
        return "optimizer"
    for name in names:  # innermost first: an op inside a gemm (its copy, say) is gemm time
        if name in GEMM_OPS:
            return "gemm/matmul"
        if name in ACTIVATION_OPS:
            return "activation"
    return "other"


def _is_device(event) -> bool:
    return event.device_type != torch.autograd.DeviceType.CPU


def split_by_class(events, on_device: bool) -> tuple[dict[str, float], dict[str, set[str]]]:
    """(us per class, {kernel name: classes that launched it}). On a device each kernel counts
    to the op that launched it; on the CPU each op's own CPU time counts."""
    us = dict.fromkeys(CLASSES, 0.0)
    launched_by: dict[str, set[str]] = {}
    for event in events:
        if _is_device(event) or event.name == _OPTIMIZER_RANGE or event.is_async:
            continue
        if not event.name.startswith("aten::"):
            continue  # runtime calls and Python ranges: time around the ops, not in them
        cls = op_class(event)
        if on_device:
            for kernel in event.kernels:
                us[cls] += kernel.duration
                launched_by.setdefault(kernel.name, set()).add(cls)
        else:
            us[cls] += event.self_cpu_time_total
    return us, launched_by


def kernel_us(events) -> dict[str, float]:
    """Total device time per kernel name (user ranges left out)."""
    out: dict[str, float] = {}
    for event in events:
        if _is_device(event) and event.name != _OPTIMIZER_RANGE:
            out[event.name] = out.get(event.name, 0.0) + event.time_range.elapsed_us()
    return out


def profiled(runner: StepRunner, n_steps: int):
    """(the profiler's events, seconds per step under the profiler) of `n_steps` steps."""
    activities = [ProfilerActivity.CPU]
    if runner.train.x.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        wall = time_steps(runner, n_steps)
    return prof.events(), wall


def run_profile(args, split) -> int:
    on_device = split.x.device.type == "cuda"
    if not on_device:
        print("  no CUDA device: the CPU time of each op stands in for kernel time")
    for topology in args.topologies:
        for m in args.members:
            profile_one(topology, m, split, args, on_device)
    return 0


def profile_one(topology: str, m: int, split, args, on_device: bool) -> None:
    configs = mixed_members(topology, m)
    pop = population_for(configs, device=split.x.device, dtype=split.x.dtype)
    runner = StepRunner(pop, _Annotated(StackedOptimizer(pop)), split)
    runner.epoch(1, max_steps=_WARMUP_STEPS)
    wall = time_steps(runner, args.steps)
    events, wall_p = profiled(runner, args.steps)
    us, launched_by = split_by_class(events, on_device)
    n = args.steps
    total = sum(us.values()) / n
    what = "kernel" if on_device else "CPU op"
    how = " (each kernel counted to the op that launched it)" if on_device else ""
    print(f"  {topology}, {m} members, {n} steps: {what} time by class, eager steps{how}")
    for cls in CLASSES:
        share = us[cls] / n / total if total else math.nan
        print(f"    {cls:12} {us[cls] / n / 1e3:8.3f} ms/step {100 * share:5.1f}%")
    _wall_line("eager", wall, wall_p, total, what)
    if not args.cuda_graphs:
        return
    graphed = warm_runner(configs, split, graphs=True)
    wall_g = time_steps(graphed, n)
    events, wall_gp = profiled(graphed, n)
    by_name = kernel_us(events)
    _wall_line("graphed", wall_g, wall_gp, sum(by_name.values()) / n, "kernel")
    classes = dict.fromkeys((*CLASSES, "ambiguous", "unseen eager"), 0.0)
    for name, t in by_name.items():
        seen = launched_by.get(name, set())
        classes[
            next(iter(seen)) if len(seen) == 1 else "ambiguous" if seen else "unseen eager"
        ] += t
    parts = ", ".join(f"{cls} {t / n / 1e3:.3f}" for cls, t in classes.items())
    print(f"    graphed kernels by name, classed as in the eager profile (ms/step): {parts}")


def _wall_line(mode: str, wall: float, wall_profiled: float, busy_us: float, what: str) -> None:
    """Wall time per step unprofiled, and under the profiler beside the time in kernels (ops)."""
    print(f"    {mode:8} wall {1e3 * wall:8.3f} ms/step; under the profiler: wall "
          f"{1e3 * wall_profiled:8.3f}, {what}s {busy_us / 1e3:8.3f}, wall - {what}s "
          f"{1e3 * wall_profiled - busy_us / 1e3:8.3f}")  # fmt: skip


# -- bits --------------------------------------------------------------------------------------


def bits_populations(topology: str, sizes: list[int]):
    """(the member, [configs per size]): nested populations, the member in each."""
    groups = grid_members(topology, n_seeds=GRID_SEEDS)
    pool = [c for group in groups for c in group]
    member = next(c for c in pool if c.seed == pool[0].seed and all(
        getattr(c, k) == v for k, v in BITS_MEMBER.items()))  # fmt: skip
    others = [c for c in pool if c != member]
    random.Random(0).shuffle(others)
    return member, [sorted([member, *others[: size - 1]], key=member_order_key) for size in sizes]


def trained_state(configs, split, n_steps: int, graphs: bool) -> list[torch.Tensor]:
    pop = population_for(configs, device=split.x.device, dtype=split.x.dtype)
    StepRunner(pop, StackedOptimizer(pop), split, cuda_graph=graphs).epoch(1, max_steps=n_steps)
    return pop.state_tensors()


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x.double() - y.double()).abs().max().item() for x, y in zip(a, b, strict=True))


def run_bits(args, split) -> int:
    graphs = "graphed" if args.cuda_graphs else "eager"
    print(f"  one member trained {args.steps} steps ({graphs}) alone and among the grid's "
          f"configurations of its topology (seeds 42-{41 + GRID_SEEDS})")  # fmt: skip
    failed = []
    for topology in args.topologies:
        member, populations = bits_populations(topology, args.sizes)
        print(f"  {member.text()}")
        print(f"    {'size':>5}  {'vs alone':10} {'max abs diff':>12}   shared with the largest")
        states = [trained_state(configs, split, args.steps, args.cuda_graphs)
                  for configs in populations]  # fmt: skip
        alone = _row(states[0], populations[0].index(member))
        largest = {c: i for i, c in enumerate(populations[-1])}  # config -> row
        for size, configs, state in zip(args.sizes, populations, states, strict=True):
            mine = _row(state, configs.index(member))
            equal = all(torch.equal(a, b) for a, b in zip(mine, alone, strict=True))
            shared = [(i, largest[c]) for i, c in enumerate(configs) if c in largest]
            same = sum(all(torch.equal(a, b) for a, b in zip(
                _row(state, i), _row(states[-1], j), strict=True)) for i, j in shared)  # fmt: skip
            print(f"    {size:5d}  {'equal' if equal else 'NOT EQUAL':10} "
                  f"{max_abs_diff(mine, alone):12.3g}   {same} of {len(shared)} equal")  # fmt: skip
            if not equal or same < len(shared):
                failed.append(f"{topology} at {size}")
    print(f"  bits: {'all equal' if not failed else 'DIFFER: ' + ', '.join(failed)}")
    return 1 if failed else 0


def _row(state: list[torch.Tensor], i: int) -> list[torch.Tensor]:
    return [t[i] for t in state]


# -- concurrent --------------------------------------------------------------------------------


def run_concurrent(args, split, evaluation) -> int:
    configs = [c.replace(max_epochs=args.max_epochs) for t in args.topologies
               for c in mixed_members(t, args.members[0])]  # fmt: skip
    options = dict(device=split.x.device, tf32=args.dtype == "tf32",
                   cuda_graphs=args.cuda_graphs)  # fmt: skip
    # A warm-up call, so that neither timed call pays the device's start-up.
    train([configs[0].replace(max_epochs=1)], split, evaluation, **options)
    print(f"  {len(configs)} members ({args.members[0]} per topology, "
          f"{', '.join(args.topologies)}), at most {args.max_epochs} epochs")  # fmt: skip
    results, walls = {}, {}
    for concurrent in (False, True):
        synchronize(split.x.device)
        started = time.perf_counter()
        results[concurrent] = train(configs, split, evaluation, concurrent_populations=concurrent,
                                    **options)  # fmt: skip
        synchronize(split.x.device)
        walls[concurrent] = time.perf_counter() - started
        print(f"  concurrent_populations={concurrent!s:5}  {walls[concurrent]:8.2f} s")
    print(f"  concurrent / sequential: x{walls[True] / walls[False]:.3f}")
    same = sum(same_result(a, b) for a, b in zip(results[False], results[True], strict=True))
    print(f"  results equal (state, losses, accuracies, best epoch, outcome): {same} of "
          f"{len(configs)}")  # fmt: skip
    return 0 if same == len(configs) else 1


def same_result(a, b) -> bool:
    lists = ("train_loss", "eval_loss", "eval_accuracy")
    if a.outcome is not b.outcome or a.best_epoch != b.best_epoch:
        return False
    if not all(np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True) for k in lists):
        return False
    if (a.state_dict is None) != (b.state_dict is None):
        return False
    return a.state_dict is None or (list(a.state_dict) == list(b.state_dict) and all(
        torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict))  # fmt: skip


# -- the command line --------------------------------------------------------------------------

DEFAULTS = {  # per sub-command: topologies, members (bits: sizes), steps
    "steps": ("T1,T2,T3,T4,T5", "1,5,25,75", 100),
    "profile": ("T4,T5", "75", 20),
    "bits": ("T1,T2,T3,T4,T5", "1,5,75,375", 50),
    "concurrent": ("T1,T2,T3,T4,T5", "3", 0),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=list(DEFAULTS))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", choices=("float32", "tf32"), default="float32",
                        help="tf32: float32 with TensorFloat-32 matmuls (CUDA)")  # fmt: skip
    parser.add_argument("--cuda-graphs", action="store_true", help="replay steps (CUDA)")
    parser.add_argument("--topologies", help="such as T1,T4")
    parser.add_argument("--members", help="population sizes, such as 1,5,25,75 (concurrent: "
                        "members per topology)")  # fmt: skip
    parser.add_argument("--sizes", help="bits: population sizes, the first the member alone")
    parser.add_argument("--steps", type=int, help="steps per timing, profile or bit check")
    parser.add_argument("--rounds", type=int, default=3, help="steps: interleaved rounds")
    parser.add_argument("--max-epochs", type=int, default=3, help="concurrent: epochs at most")
    parser.add_argument("--limit-train", type=int, help="first N training images (default all)")
    parser.add_argument("--limit-eval", type=int, default=10_000, help="concurrent: first N "
                        "test images evaluated")  # fmt: skip
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    topologies, members, steps = DEFAULTS[args.command]
    args.topologies = _names(parser, args.topologies or topologies)
    args.members = _sizes(parser, "--members", args.members or members)
    args.sizes = _sizes(parser, "--sizes", args.sizes or members)
    args.steps = steps if args.steps is None else args.steps
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    if device.type != "cuda" and (args.dtype == "tf32" or args.cuda_graphs):
        parser.error("--dtype tf32 and --cuda-graphs need a CUDA device (--device cuda)")
    if args.command == "bits" and args.sizes[0] != 1:
        parser.error(f"--sizes must start with 1 (the member alone), got {args.sizes}")
    most, given = (375, args.sizes) if args.command == "bits" else (75, args.members)
    if max(given) > most:
        parser.error(f"at most {most} members of one topology in the grid, got {max(given)}")
    for name in ("steps", "rounds", "max_epochs", "limit_train", "limit_eval", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1 and args.command != "concurrent":
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return args


def _names(parser, text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TOPOLOGIES]
    if unknown or not names:
        parser.error(f"--topologies takes {', '.join(TOPOLOGIES)}, got {text!r}")
    return names


def _sizes(parser, flag: str, text: str) -> list[int]:
    try:
        sizes = [int(t) for t in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        parser.error(f"{flag} takes positive integers separated by commas, got {text!r}")
    return sizes


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fashion = sources.load(download=False)
    n = args.limit_train or len(fashion.train_labels)
    split = make_split(fashion.train_images[:n], fashion.train_labels[:n], mean=0.5, std=0.5,
                       device=device)  # fmt: skip
    if args.command != "concurrent" and args.steps > n // 64:  # full batches of 64 only
        raise SystemExit(f"--steps {args.steps} needs at least {64 * args.steps} training "
                         f"images, got --limit-train {n}")  # fmt: skip
    precision = "float32+tf32" if args.dtype == "tf32" else "float32"
    print(f"{args.command}: {describe_device(device)}, torch {torch.__version__}, {precision}, "
          f"{torch.get_num_threads()} CPU threads, {n} training images")  # fmt: skip
    with training_numerics(args.dtype == "tf32") if args.command != "concurrent" else \
            contextlib.nullcontext():  # fmt: skip
        if args.command == "steps":
            return run_steps(args, split)
        if args.command == "profile":
            return run_profile(args, split)
        if args.command == "bits":
            return run_bits(args, split)
    k = min(args.limit_eval, len(fashion.test_labels))
    evaluation = make_split(fashion.test_images[:k], fashion.test_labels[:k], mean=0.5,
                            std=0.5, device=device)  # fmt: skip
    return run_concurrent(args, split, evaluation)


if __name__ == "__main__":
    sys.exit(main())
