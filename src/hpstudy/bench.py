"""Side-by-side training speed: the paper's loop, the engine at several population sizes, and
the FLOP floor, all measured in one run on one device.

    >>> report = run_benchmark(device="cpu", steps=100)
    >>> report["speedup_15"], report["floor_ratio_15"]

Everything is T4 with Adam on the full 60,000-image training set; only training steps are timed
(evaluation excluded), after a warm-up. With `steps`, each variant times that many steps and
scales to a full epoch. Seconds are per model-epoch: a population's epoch time divided by its
members.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from hpstudy.engine.flops import measure_matmul_flops, model_epoch_flops, synchronize
from hpstudy.engine.optimizers import StackedOptimizer
from hpstudy.engine.population import Population, member_order_key
from hpstudy.engine.reference import make_torch_optimizer
from hpstudy.engine.splits import Split
from hpstudy.engine.trainer import describe_device, run_epoch
from hpstudy.model import build_mlp
from hpstudy.space import Config

PAPER_LRS = (0.001, 0.005, 0.01, 0.05, 0.1)
_WARMUP_STEPS = 5


def bench_configs(n_members: int) -> list[Config]:
    """T4 + Adam members differing in learning rate and seed, as in a grid with seeds."""
    configs = [
        Config(topology="T4", optimizer="adam", lr=PAPER_LRS[i % len(PAPER_LRS)], seed=i)
        for i in range(n_members)
    ]
    return sorted(configs, key=member_order_key)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def time_paper_loop(train: Split, device: torch.device, steps: int | None) -> float:
    """Seconds per epoch of DataLoader(TensorDataset, shuffle=True) + nn.Sequential + Adam."""
    config = bench_configs(1)[0]
    torch.manual_seed(config.seed)
    model = build_mlp(config).to(device)
    optimizer = make_torch_optimizer(config, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    dataset = torch.utils.data.TensorDataset(train.x.cpu(), train.y.cpu())
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True)
    n_steps = len(loader)

    def run(limit: int) -> None:
        for i, (x, y) in enumerate(loader):
            if i == limit:
                break
            loss = loss_fn(model(x.to(device)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    run(_WARMUP_STEPS)
    limit = min(steps or n_steps, n_steps)
    return _timed(lambda: run(limit), device) * n_steps / limit


def time_engine(train: Split, n_members: int, device: torch.device, steps: int | None) -> float:
    """Seconds per epoch of a population of `n_members` (training steps only)."""
    pop = Population.from_configs(bench_configs(n_members), device=device, dtype=train.x.dtype)
    optimizer = StackedOptimizer(pop)
    n_steps = math.ceil(len(train) / pop.configs[0].batch_size)
    run_epoch(pop, optimizer, train, epoch=1, max_steps=_WARMUP_STEPS)
    limit = min(steps or n_steps, n_steps)
    elapsed = _timed(lambda: run_epoch(pop, optimizer, train, epoch=2, max_steps=limit), device)
    return elapsed * n_steps / limit


def run_benchmark(
    train: Split,
    *,
    device: torch.device | str = "cpu",
    members: Sequence[int] = (1, 15, 75),
    steps: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Time every variant; returns the JSON-ready report (see `hpstudy bench --json`)."""
    device = torch.device(device)
    train = train.to(device, torch.float32)
    say = progress or (lambda _msg: None)
    per_model_epoch: dict[str, float] = {}
    say("paper loop (DataLoader + nn.Sequential + torch.optim, 1 configuration)")
    per_model_epoch["paper_loop"] = time_paper_loop(train, device, steps)
    for n_members in members:
        say(f"engine, {n_members} member(s)")
        per_model_epoch[f"engine_{n_members}"] = (
            time_engine(train, n_members, device, steps) / n_members
        )
    say("matmul throughput for the FLOP floor")
    flops = measure_matmul_flops(str(device))
    floor = model_epoch_flops(bench_configs(1)[0], len(train)) / flops
    report = {
        "device": describe_device(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps": steps,
        "matmul_tflops": flops / 1e12,
        "per_model_epoch_s": per_model_epoch,
        "floor_s": floor,
    }
    if "engine_15" in per_model_epoch:
        report["speedup_15"] = per_model_epoch["paper_loop"] / per_model_epoch["engine_15"]
        report["floor_ratio_15"] = per_model_epoch["engine_15"] / floor
    return report
