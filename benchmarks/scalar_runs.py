"""Members that differ only in a scalar argument: what do the extra optimizer runs cost?

    .venv/bin/python benchmarks/scalar_runs.py [--steps 100] [--rounds 5] [--members 15]

A population whose members share one rule updates them with one kernel sequence; members with
15 different learning rates (or momenta) take 15 runs of the same kernels on smaller slices.
Per-member argument tensors would turn those runs back into one sequence, plus a multiply by
an (M, 1) tensor per parameter, so the one-rule population is a lower bound on what they could
reach. This times training steps (forward, backward, update; T4, batch 64, FashionMNIST) of:
one rule, 15 learning rates, 15 (learning rate, momentum, weight decay) rules, and the same
for Adam, in interleaved rounds, and prints medians and ratios to the one-rule population.
Then it times the optimizer update alone for SGD with momentum: one rule, 15 runs, and a
prototype with per-member (M, 1) learning-rate and momentum tensors (one op sequence).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from hpstudy.config.config import Config
from hpstudy.data import sources
from hpstudy.engine import make_split
from hpstudy.engine.optimizers import StackedOptimizer
from hpstudy.engine.population import Population, member_order_key
from hpstudy.engine.steps import StepRunner


def variants(m: int) -> dict[str, list[Config]]:
    lrs = [0.01 * (1 + i / m) for i in range(m)]
    return {
        "sgd, one rule": [Config(optimizer="sgd", lr=0.01, momentum=0.9, seed=i) for i in range(m)],
        f"sgd, {m} lrs": [Config(optimizer="sgd", lr=lr, momentum=0.9, seed=i)
                          for i, lr in enumerate(lrs)],
        f"sgd, {m} (lr, momentum, wd)": [
            Config(optimizer="sgd", lr=lr, momentum=0.5 + 0.4 * i / m, weight_decay=1e-5 * i,
                   seed=i) for i, lr in enumerate(lrs)],
        "adam, one rule": [Config(optimizer="adam", lr=0.001, seed=i) for i in range(m)],
        f"adam, {m} lrs": [Config(optimizer="adam", lr=lr / 10, seed=i)
                           for i, lr in enumerate(lrs)],
    }  # fmt: skip


def time_steps(configs: list[Config], train, steps: int) -> float:
    configs = sorted(configs, key=member_order_key)
    pop = Population.from_configs(configs, device=torch.device("cpu"), dtype=torch.float32)
    runner = StepRunner(pop, StackedOptimizer(pop), train)
    runner.epoch(1, max_steps=3)  # warm-up
    started = time.perf_counter()
    runner.epoch(2, max_steps=steps)
    return (time.perf_counter() - started) / steps


def time_updates(m: int, steps: int) -> dict[str, float]:
    """Seconds per SGD-momentum update of M T4 members with M learning rates: the engine's
    per-member (M, 1) columns (one op sequence), and the alternative it replaced, one run of
    torch.optim's `_foreach_` sequence per learning rate; and one shared rule for reference."""
    lrs = [0.01 * (1 + i / m) for i in range(m)]
    one = sorted([Config(lr=0.01, momentum=0.9, seed=i) for i in range(m)], key=member_order_key)
    many = sorted([Config(lr=lr, momentum=0.9, seed=i) for i, lr in enumerate(lrs)],
                  key=member_order_key)  # fmt: skip
    out = {}
    for name, configs in (("update, one rule", one), (f"update, {m} lrs as columns", many)):
        pop = Population.from_configs(configs, device=torch.device("cpu"), dtype=torch.float32)
        for g in pop.grad_rows:
            g.normal_()
        opt = StackedOptimizer(pop)
        opt.step()
        started = time.perf_counter()
        for _ in range(steps):
            opt.step()
        out[name] = (time.perf_counter() - started) / steps
    pop = Population.from_configs(many, device=torch.device("cpu"), dtype=torch.float32)
    for g in pop.grad_rows:
        g.normal_()
    bufs = [g.clone() for g in pop.grad_rows]
    started = time.perf_counter()
    for _ in range(steps):
        for i, config in enumerate(many):  # one run per learning rate
            params, grads = [r[i : i + 1] for r in pop.rows], [g[i : i + 1] for g in pop.grad_rows]
            buffers = [b[i : i + 1] for b in bufs]
            torch._foreach_mul_(buffers, config.momentum)
            torch._foreach_add_(buffers, grads)
            torch._foreach_add_(params, buffers, alpha=-config.lr)
    out[f"update, {m} lrs as runs"] = (time.perf_counter() - started) / steps
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--members", type=int, default=15)
    args = parser.parse_args()
    fashion = sources.load(download=False)
    train = make_split(fashion.train_images, fashion.train_labels, mean=0.5, std=0.5)
    cases = variants(args.members)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, configs in cases.items():
            times[name].append(time_steps(configs, train, args.steps))
    print(f"ms per step, {args.members} members, T4, batch 64, median of {args.rounds} rounds "
          f"(torch {torch.__version__}, {torch.get_num_threads()} threads)")  # fmt: skip
    updates: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, seconds in time_updates(args.members, args.steps).items():
            updates.setdefault(name, []).append(seconds)
    times |= updates
    for name, values in times.items():
        base = "adam, one rule" if name.startswith("adam") else "sgd, one rule"
        base = "update, one rule" if name.startswith("update") else base
        ratio = statistics.median(values) / statistics.median(times[base])
        print(f"  {name:<32} {1e3 * statistics.median(values):8.2f}  x{ratio:.3f} of {base}")


if __name__ == "__main__":
    main()
