"""The grouped and the fused optimizer step, side by side: ops per step and time per step.

    .venv/bin/python benchmarks/optimizer_step.py [--topology T4] [--steps 20] [--rounds 5]
        [--device cpu] [--threads 1] [--cuda-graphs]

A population like one topology of the paper's grid (3 optimizers x 5 learning rates x 5
activations = 75 members, batch 64, FashionMNIST) trains with the grouped step (one update per
Adam rule and one per SGD kind and RMSprop) and with the fused step (`engine.fused`: every rule in
one op sequence per tensor). It prints, per path:

- the ATen ops one optimizer step runs, views left out (counted with a dispatch mode: on a GPU
  each is a kernel launch, or a node of a CUDA graph), for the grid population and for a
  one-rule population, so the growth with the number of rules shows;
- median ms per training step (forward, backward, update) and per update alone, timed in
  interleaved rounds, and the ratio fused / grouped.

It never asserts: timings depend on the machine and its load (see docs/results.md for figures).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hpstudy.config.config import Config
from hpstudy.data import sources
from hpstudy.engine import make_split
from hpstudy.engine.optimizers import OPTIMIZER_STEPS, StackedOptimizer
from hpstudy.engine.population import Population, member_order_key
from hpstudy.engine.steps import StepRunner

LRS = {"sgd": (0.1, 0.05, 0.01, 0.005, 0.001), "adam": (0.01, 0.005, 0.002, 0.001, 0.0005),
       "rmsprop": (0.01, 0.005, 0.002, 0.001, 0.0005)}  # fmt: skip
ACTIVATIONS = ("relu", "sigmoid", "tanh", "leaky_relu", "elu")


def grid_population(topology: str) -> list[Config]:
    """One topology of the paper's grid: 75 members, one seed."""
    configs = [Config(topology=topology, optimizer=o, lr=lr, activation=a, seed=0)
               for o in LRS for lr, a in itertools.product(LRS[o], ACTIVATIONS)]  # fmt: skip
    return sorted(configs, key=member_order_key)


def one_rule(topology: str, n: int) -> list[Config]:
    return [Config(topology=topology, optimizer="adam", lr=0.001, seed=s) for s in range(n)]


class _OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:  # a view launches nothing
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_update_ops(configs: list[Config], step: str, device: torch.device) -> int:
    pop = Population.from_configs(configs, device=device, dtype=torch.float32)
    optimizer = StackedOptimizer(pop, step=step)
    optimizer.step()  # past SGD's first step
    counter = _OpCounter()
    with counter:
        optimizer.step()
    return sum(counter.ops.values())


def time_steps(
    configs, train, step: str, n_steps: int, device: torch.device, graphs: bool = False
) -> tuple[float, float]:
    """(s per training step, s per update alone); steps replayed from a CUDA graph with
    `graphs`, updates always launched one by one."""
    pop = Population.from_configs(configs, device=device, dtype=torch.float32)
    optimizer = StackedOptimizer(pop, step=step)
    runner = StepRunner(pop, optimizer, train, cuda_graph=graphs)
    runner.epoch(1, max_steps=4)  # warm-up (and, with graphs, the capture)
    _sync(device)
    started = time.perf_counter()
    runner.epoch(2, max_steps=n_steps)
    _sync(device)
    per_step = (time.perf_counter() - started) / n_steps
    started = time.perf_counter()
    for _ in range(n_steps):
        optimizer.step()
    _sync(device)
    return per_step, (time.perf_counter() - started) / n_steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", default="T4")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cuda-graphs", action="store_true", help="replay steps (CUDA)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    grid = grid_population(args.topology)
    print(f"{args.topology}, {len(grid)} members (3 optimizers x 5 lrs x 5 activations), "
          f"batch 64, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    for step in OPTIMIZER_STEPS:
        n_grid = count_update_ops(grid, step, device)
        n_one = count_update_ops(one_rule(args.topology, len(grid)), step, device)
        print(f"  ops per update, {step:<7}: {n_grid:4d} for the grid population, "
              f"{n_one:4d} for one Adam rule")  # fmt: skip
    fashion = sources.load(download=False)
    train = make_split(fashion.train_images, fashion.train_labels, mean=0.5, std=0.5,
                       device=device)  # fmt: skip
    times: dict[str, list[tuple[float, float]]] = {s: [] for s in OPTIMIZER_STEPS}
    for _ in range(args.rounds):  # interleaved, so a change of machine load hits both alike
        for step in OPTIMIZER_STEPS:
            times[step].append(time_steps(grid, train, step, args.steps, device,
                                          args.cuda_graphs))  # fmt: skip
    medians = {s: [statistics.median(t[k] for t in times[s]) for k in (0, 1)] for s in times}
    print(f"  median of {args.rounds} rounds of {args.steps} steps:")
    for step, (per_step, per_update) in medians.items():
        print(f"  {step:<7} {1e3 * per_step:8.2f} ms per step, {1e3 * per_update:8.2f} ms per "
              "update")  # fmt: skip
    (g_step, g_update), (f_step, f_update) = medians["grouped"], medians["fused"]
    print(f"  fused / grouped: x{f_step / g_step:.3f} per step, x{f_update / g_update:.3f} per "
          "update")  # fmt: skip


if __name__ == "__main__":
    main()
