"""Side-by-side training speed: the paper's loop, the engine at several population sizes, and
the FLOP floor, all measured in one run on one device.

    >>> report = run_benchmark(device="cpu", steps=100)
    >>> report["speedup_15"], report["floor_ratio_15"]

Everything is T4 with Adam on the full 60,000-image training set; only training steps are timed
(evaluation excluded), after a warm-up. With `steps`, each variant times that many steps and
scales to a full epoch. Seconds are per model-epoch: a population's epoch time divided by its
members.

Where torchvision imports, the paper's loop is also timed as the paper wrote it: torchvision's
`FashionMNIST` with `Compose([ToTensor(), Normalize(...)])`, read from our verified files (no
download). Otherwise the report says why that variant is missing.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from hpstudy import data
from hpstudy.engine.flops import (
    matmul_precision,
    measure_matmul_flops,
    model_epoch_flops,
    synchronize,
)
from hpstudy.engine.optimizers import StackedOptimizer
from hpstudy.engine.population import Population, member_order_key
from hpstudy.engine.reference import make_torch_optimizer
from hpstudy.engine.splits import Split
from hpstudy.engine.steps import StepRunner, graphs_supported
from hpstudy.engine.trainer import describe_device
from hpstudy.errors import DataError
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


def _time_paper_steps(
    loader: torch.utils.data.DataLoader, device: torch.device, steps: int | None
) -> float:
    """Seconds per epoch of the paper's inner loop (nn.Sequential + Adam) over `loader`.

    Both paper-loop variants share it, so they differ only in where the batches come from;
    inputs (B, 784) or (B, 1, 28, 28) are flattened to (B, 784).
    """
    config = bench_configs(1)[0]
    torch.manual_seed(config.seed)
    model = build_mlp(config).to(device)
    optimizer = make_torch_optimizer(config, model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    n_steps = len(loader)

    def run(limit: int) -> None:
        for i, (x, y) in enumerate(loader):
            if i == limit:
                break
            loss = loss_fn(model(x.to(device).flatten(1)), y.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    run(_WARMUP_STEPS)
    limit = min(steps or n_steps, n_steps)
    return _timed(lambda: run(limit), device) * n_steps / limit


def time_paper_loop(train: Split, device: torch.device, steps: int | None) -> float:
    """Seconds per epoch of DataLoader(TensorDataset, shuffle=True) + nn.Sequential + Adam."""
    dataset = torch.utils.data.TensorDataset(train.x.cpu(), train.y.cpu())
    batch_size = bench_configs(1)[0].batch_size
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    return _time_paper_steps(loader, device, steps)


@functools.cache
def import_torchvision() -> tuple[ModuleType | None, str | None]:
    """(torchvision, None) when it imports, else (None, why not)."""
    try:
        import torchvision
        import torchvision.datasets
        import torchvision.transforms
    except Exception as exc:
        # Not only ImportError: PyPI's torchvision is a CUDA build, and against a CPU-only torch
        # its import raises RuntimeError "operator torchvision::nms does not exist"
        # (pytorch/vision#9085); the CPU build comes from download.pytorch.org/whl/cpu.
        return None, f"import torchvision failed: {type(exc).__name__}: {exc}"
    return torchvision, None


def stage_torchvision_root(
    root: str | os.PathLike, data_dir: str | os.PathLike | None = None
) -> Path:
    """Make `root/FashionMNIST/raw/` hold the four files as torchvision reads them; return `root`.

    torchvision opens `raw/<name>` uncompressed and downloads when any is missing, so each file
    from `data.locate(data_dir)` (`.gz` or not) is written there decompressed, after its SHA-256
    is checked against the canonical digest: torchvision then reads exactly our verified bytes.
    """
    source = data.locate(data_dir, download=False)
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in data.FILES.values():
        path = data.find_file(source, name)
        if path is None:  # deleted since locate
            raise DataError(f"{source / name} disappeared while staging it for torchvision; rerun")
        content = data.read_bytes(path)
        data.verify_digest(name, content, path)
        (raw / name).write_bytes(content)
    return Path(root)


def torchvision_fashion_mnist(root: str | os.PathLike, *, train: bool = True):
    """torchvision's FashionMNIST under a staged `root`, normalised with the training statistics.

    Raises RuntimeError (with the reason) when torchvision does not import.
    """
    torchvision, why = import_torchvision()
    if torchvision is None:
        raise RuntimeError(why)
    transforms = torchvision.transforms
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((data.PIXEL_MEAN,), (data.PIXEL_STD,))]
    )
    return torchvision.datasets.FashionMNIST(root, train=train, transform=transform, download=False)


def time_paper_loop_torchvision(
    data_dir: str | os.PathLike | None, device: torch.device, steps: int | None
) -> float:
    """Seconds per epoch of DataLoader(torchvision FashionMNIST + ToTensor + Normalize)."""
    with tempfile.TemporaryDirectory(prefix="hpstudy-torchvision-") as root:
        dataset = torchvision_fashion_mnist(stage_torchvision_root(root, data_dir))
        batch_size = bench_configs(1)[0].batch_size
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=True, num_workers=0
        )
        return _time_paper_steps(loader, device, steps)


def time_engine(
    train: Split,
    n_members: int,
    device: torch.device,
    steps: int | None,
    *,
    cuda_graph: bool = False,
) -> tuple[float, float]:
    """(seconds per epoch, seconds spent capturing CUDA graphs) of a population of `n_members`.

    Training steps only; with `cuda_graph` the capture happens during the warm-up, so the
    epoch time is that of replays and the capture time is reported on its own.
    """
    pop = Population.from_configs(bench_configs(n_members), device=device, dtype=train.x.dtype)
    runner = StepRunner(pop, StackedOptimizer(pop), train, cuda_graph=cuda_graph)
    n_steps = math.ceil(len(train) / pop.configs[0].batch_size)
    runner.epoch(1, max_steps=_WARMUP_STEPS)
    limit = min(steps or n_steps, n_steps)
    elapsed = _timed(lambda: runner.epoch(2, max_steps=limit), device)
    return elapsed * n_steps / limit, runner.capture_s


def run_benchmark(
    train: Split,
    *,
    device: torch.device | str = "cpu",
    members: Sequence[int] = (1, 15, 75),
    steps: int | None = None,
    data_dir: str | os.PathLike | None = None,
    tf32: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Time every variant; returns the JSON-ready report (see `hpstudy bench --json`).

    `data_dir` is where the torchvision variant reads the four files (as `data.locate`). On
    CUDA each population size is also timed with CUDA graphs (`engine_N_graphs`). `tf32=True`
    (CUDA only) lets every variant and the floor's matmuls use TensorFloat-32.
    """
    device = torch.device(device)
    if tf32 and device.type != "cuda":
        raise ValueError(f"tf32 needs a CUDA device, got {device}")
    with matmul_precision(tf32):
        return _run_benchmark(train, device, members, steps, data_dir, tf32, progress)


def _run_benchmark(train, device, members, steps, data_dir, tf32, progress) -> dict:
    train = train.to(device, torch.float32)
    say = progress or (lambda _msg: None)
    per_model_epoch: dict[str, float] = {}
    say("paper loop (DataLoader + nn.Sequential + torch.optim, 1 configuration)")
    per_model_epoch["paper_loop"] = time_paper_loop(train, device, steps)
    torchvision, torchvision_skipped = import_torchvision()
    if torchvision is None:
        say(f"paper loop with torchvision skipped: {torchvision_skipped}")
    else:
        say("paper loop with torchvision FashionMNIST + ToTensor + Normalize")
        per_model_epoch["paper_loop_torchvision"] = time_paper_loop_torchvision(
            data_dir, device, steps
        )
    capture_s: dict[str, float] = {}
    for n_members in members:
        say(f"engine, {n_members} member(s)")
        seconds, _ = time_engine(train, n_members, device, steps)
        per_model_epoch[f"engine_{n_members}"] = seconds / n_members
        if graphs_supported(device):
            say(f"engine with CUDA graphs, {n_members} member(s)")
            seconds, capture = time_engine(train, n_members, device, steps, cuda_graph=True)
            per_model_epoch[f"engine_{n_members}_graphs"] = seconds / n_members
            capture_s[f"engine_{n_members}_graphs"] = capture
    say("matmul throughput for the FLOP floor")
    flops = measure_matmul_flops(str(device), tf32=tf32)
    floor = model_epoch_flops(bench_configs(1)[0], len(train)) / flops
    report = {
        "device": describe_device(device),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__ if torchvision else None,
        "torchvision_skipped": torchvision_skipped,  # why the torchvision variant is missing
        "threads": torch.get_num_threads(),
        "steps": steps,
        "precision": "float32+tf32" if tf32 else "float32",
        "matmul_tflops": flops / 1e12,
        "per_model_epoch_s": per_model_epoch,
        "graph_capture_s": capture_s,  # time to capture the graphs, not in the epoch times
        "floor_s": floor,
    }
    if "engine_15" in per_model_epoch:
        engine_15 = per_model_epoch["engine_15"]
        report["speedup_15"] = per_model_epoch["paper_loop"] / engine_15
        report["floor_ratio_15"] = engine_15 / floor
        if "paper_loop_torchvision" in per_model_epoch:
            report["speedup_15_torchvision"] = per_model_epoch["paper_loop_torchvision"] / engine_15
    return report
