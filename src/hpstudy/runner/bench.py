"""Side-by-side training speed: the paper's loop, the engine at several population sizes, and
the FLOP floor, all measured in one run on one device.

    >>> report = run_benchmark(device="cpu", steps=100)
    >>> report["speedup_15"], report["floor_ratio_15"]
    >>> report = run_benchmark(device="cpu", steps=20, family="cnn")   # members 1, 8, 32
    >>> report["speedup_8"]

The MLP family is T4 with Adam; the CNN family is conv [32, 64] (3x3, batch norm), one dense
layer of 128, Adam, batches of 128 (`bench_configs`). Both train on the full 60,000-image
training set; only training steps are timed (evaluation excluded), after a warm-up. With
`steps`, each variant times that many steps and scales to a full epoch. Seconds are per
model-epoch: a population's epoch time divided by its members.

A shared or noisy machine can halve or double one timing minutes apart, so every variant is set
up and warmed once, then timed `repeats` times interleaved (A B C, A B C, ...): a slow spell hits
all variants of a round alike. Each time and each ratio is reported as the median over rounds
with its spread (min, max); a ratio is taken within each round, then summarised.

Where torchvision imports, the paper's loop is also timed as the paper wrote it: torchvision's
`FashionMNIST` with `Compose([ToTensor(), Normalize(...)])`, read from our verified files (no
download). Otherwise the report says why that variant is missing.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from hpstudy.config.config import Config
from hpstudy.config.cost import model_epoch_flops
from hpstudy.data import fashion_mnist, idx, sources
from hpstudy.engine.flops import measure_matmul_flops, synchronize, training_numerics
from hpstudy.engine.model import build_model
from hpstudy.engine.optimizers import StackedOptimizer
from hpstudy.engine.population import member_order_key
from hpstudy.engine.populations import population_for
from hpstudy.engine.reference import make_torch_optimizer
from hpstudy.engine.splits import Split
from hpstudy.engine.steps import StepRunner, graphs_supported
from hpstudy.engine.training import describe_device
from hpstudy.errors import DataError

PAPER_LRS = (0.001, 0.005, 0.01, 0.05, 0.1)
CNN_LRS = (0.001, 0.0005, 0.002)
_WARMUP_STEPS = 5
# Per family: the benchmarked shape, the population sizes timed by default, and the size whose
# ratio to the paper loop is reported as speedup_N and floor_ratio_N.
FAMILIES = {
    "mlp": (Config(topology="T4", optimizer="adam"), PAPER_LRS, (1, 15, 75), 15),
    "cnn": (
        Config(topology=(128,), conv=(32, 64), batch_norm=True, optimizer="adam", batch_size=128),
        CNN_LRS,
        (1, 8, 32),
        8,
    ),
}


def bench_configs(n_members: int, family: str = "mlp") -> list[Config]:
    """Members of the family's shape with Adam, differing in learning rate and seed, as in a
    grid with seeds."""
    base, lrs, _, _ = FAMILIES[family]
    configs = [base.replace(lr=lrs[i % len(lrs)], seed=i) for i in range(n_members)]
    return sorted(configs, key=member_order_key)


def _timed(fn: Callable[[], None], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


Timer = Callable[[], float]  # times one repetition: seconds per epoch


def _paper_steps_timer(
    loader: torch.utils.data.DataLoader, device: torch.device, steps: int | None, config: Config
) -> Timer:
    """Timer of the paper's inner loop (nn.Sequential + Adam) over `loader`, warmed up.

    Both paper-loop variants share it, so they differ only in where the batches come from;
    inputs (B, 784) or (B, 1, 28, 28) are flattened to (B, 784) (a CNN's first module restores
    the image).
    """
    torch.manual_seed(config.seed)
    model = build_model(config).to(device)
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
    return lambda: _timed(lambda: run(limit), device) * n_steps / limit


def paper_loop_timer(
    train: Split, device: torch.device, steps: int | None, family: str = "mlp"
) -> Timer:
    """Timer of DataLoader(TensorDataset, shuffle=True) + nn.Sequential + Adam."""
    config = bench_configs(1, family)[0]
    dataset = torch.utils.data.TensorDataset(train.x.cpu(), train.y.cpu())
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True)
    return _paper_steps_timer(loader, device, steps, config)


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
    from `sources.locate(data_dir)` (`.gz` or not) is written there decompressed, after its SHA-256
    is checked against the canonical digest: torchvision then reads exactly our verified bytes.
    """
    source = sources.locate(data_dir, download=False)
    raw = Path(root) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in fashion_mnist.FILES.values():
        path = idx.find_file(source, name)
        if path is None:  # deleted since locate
            raise DataError(f"{source / name} disappeared while staging it for torchvision; rerun")
        (raw / name).write_bytes(fashion_mnist.read_canonical(path, name))
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
        [
            transforms.ToTensor(),
            transforms.Normalize((fashion_mnist.PIXEL_MEAN,), (fashion_mnist.PIXEL_STD,)),
        ]
    )
    return torchvision.datasets.FashionMNIST(root, train=train, transform=transform, download=False)


def paper_loop_torchvision_timer(
    root: str | os.PathLike,
    data_dir: str | os.PathLike | None,
    device: torch.device,
    steps: int | None,
    family: str = "mlp",
) -> Timer:
    """Timer of DataLoader(torchvision FashionMNIST + ToTensor + Normalize), staged in `root`
    (which must outlive the timer)."""
    config = bench_configs(1, family)[0]
    dataset = torchvision_fashion_mnist(stage_torchvision_root(root, data_dir))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, num_workers=0
    )
    return _paper_steps_timer(loader, device, steps, config)


def engine_timer(
    train: Split,
    n_members: int,
    device: torch.device,
    steps: int | None,
    *,
    cuda_graph: bool = False,
    family: str = "mlp",
) -> tuple[Timer, StepRunner]:
    """Timer of a population of `n_members` (seconds per population-epoch), and its runner.

    Training steps only; with `cuda_graph` the capture happens during the warm-up, so the
    epoch time is that of replays and `runner.capture_s` is the capture time, on its own.
    """
    configs = bench_configs(n_members, family)
    pop = population_for(configs, device=device, dtype=train.x.dtype)
    runner = StepRunner(pop, StackedOptimizer(pop), train, cuda_graph=cuda_graph)
    n_steps = math.ceil(len(train) / pop.configs[0].batch_size)
    runner.epoch(1, max_steps=_WARMUP_STEPS)
    limit = min(steps or n_steps, n_steps)

    def time_once() -> float:
        return _timed(lambda: runner.epoch(2, max_steps=limit), device) * n_steps / limit

    return time_once, runner


def interleave(timers: dict[str, Timer], repeats: int) -> dict[str, list[float]]:
    """Each timer's results over `repeats` rounds, the timers taking turns (A B, A B, ...)."""
    samples: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(repeats):
        for name, time_once in timers.items():
            samples[name].append(time_once())
    return samples


def summarise(values: Sequence[float]) -> tuple[float, list[float]]:
    """(median, [min, max]) of `values`."""
    return statistics.median(values), [min(values), max(values)]


def run_benchmark(
    train: Split,
    *,
    device: torch.device | str = "cpu",
    members: Sequence[int] | None = None,
    steps: int | None = None,
    repeats: int = 5,
    data_dir: str | os.PathLike | None = None,
    tf32: bool = False,
    progress: Callable[[str], None] | None = None,
    family: str = "mlp",
    threads: int | None = None,
) -> dict:
    """Time every variant `repeats` times, interleaved; returns the JSON-ready report (see
    `hpstudy bench --json`). `threads` sets torch's CPU threads for the run (restored after).

    `family` is "mlp" (T4; members default to 1, 15, 75, ratios at 15) or "cnn" (members 1, 8,
    32, ratios at 8): see `FAMILIES`.

    `data_dir` is where the torchvision variant reads the four files (as `sources.locate`). On
    CUDA each population size is also timed with CUDA graphs (`engine_N_graphs`). `tf32=True`
    (CUDA only) lets every variant and the floor's matmuls use TensorFloat-32.
    """
    device = torch.device(device)
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got family={family!r}")
    _, _, default_members, _ = FAMILIES[family]
    members = default_members if members is None else members
    if tf32 and device.type != "cuda":
        raise ValueError(f"tf32 needs a CUDA device, got {device}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got repeats={repeats}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got threads={threads}")
    say = progress or (lambda _msg: None)
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(train, device, members, steps, repeats, data_dir, tf32, say, family)
    finally:
        torch.set_num_threads(threads_before)


def _run(train, device, members, steps, repeats, data_dir, tf32, say, family) -> dict:
    _, _, _, ratio_members = FAMILIES[family]
    numerics = training_numerics(tf32)
    with numerics, tempfile.TemporaryDirectory(prefix="hpstudy-torchvision-") as root:
        train = train.to(device, torch.float32)
        timers, per_member, capture = _prepare(
            train, device, members, steps, (root, data_dir), say, family
        )
        say(f"timing {len(timers)} variants, {repeats} interleaved rounds")
        samples = interleave(timers, repeats)
        say("matmul throughput for the FLOP floor")
        flops = measure_matmul_flops(str(device), tf32=tf32)
    per_model_epoch = {
        name: [t / per_member[name] for t in values] for name, values in samples.items()
    }
    floor = model_epoch_flops(bench_configs(1, family)[0], len(train)) / flops
    torchvision, torchvision_skipped = import_torchvision()
    report = {
        "family": family,
        "model": str(bench_configs(1, family)[0]),
        "device": describe_device(device),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__ if torchvision else None,
        "torchvision_skipped": torchvision_skipped,  # why the torchvision variant is missing
        "threads": torch.get_num_threads(),
        "steps": steps,
        "repeats": repeats,
        "precision": "float32+tf32" if tf32 else "float32",
        "matmul_tflops": flops / 1e12,
        "graph_capture_s": {name: runner.capture_s for name, runner in capture.items()},
        "floor_s": floor,
    }
    report |= _summaries(per_model_epoch, floor, ratio_members)
    return report


def _prepare(train, device, members, steps, torchvision_paths, say, family="mlp"):
    """(timers, members per timed run, CUDA-graph runners), each variant set up and warm."""
    timers: dict[str, Timer] = {}
    per_member: dict[str, int] = {}
    capture: dict[str, StepRunner] = {}
    say("paper loop (DataLoader + nn.Sequential + torch.optim, 1 configuration)")
    timers["paper_loop"] = paper_loop_timer(train, device, steps, family)
    torchvision, torchvision_skipped = import_torchvision()
    if torchvision is None:
        say(f"paper loop with torchvision skipped: {torchvision_skipped}")
    else:
        say("paper loop with torchvision FashionMNIST + ToTensor + Normalize")
        timers["paper_loop_torchvision"] = paper_loop_torchvision_timer(
            *torchvision_paths, device, steps, family
        )
    for n_members in members:
        say(f"engine, {n_members} member(s)")
        timers[f"engine_{n_members}"], _ = engine_timer(
            train, n_members, device, steps, family=family
        )
        per_member[f"engine_{n_members}"] = n_members
        if graphs_supported(device):
            say(f"engine with CUDA graphs, {n_members} member(s)")
            name = f"engine_{n_members}_graphs"
            timers[name], capture[name] = engine_timer(
                train, n_members, device, steps, cuda_graph=True, family=family
            )
            per_member[name] = n_members
    return timers, {name: per_member.get(name, 1) for name in timers}, capture


def _summaries(per_model_epoch: dict[str, list[float]], floor: float, n: int = 15) -> dict:
    """Medians and spreads of the times and of the ratios, each ratio taken round by round;
    the ratios compare the population of `n` members (speedup_n, floor_ratio_n)."""
    out: dict = {"per_model_epoch_s": {}, "per_model_epoch_spread_s": {}}
    for name, values in per_model_epoch.items():
        out["per_model_epoch_s"][name], out["per_model_epoch_spread_s"][name] = summarise(values)
    if f"engine_{n}" not in per_model_epoch:
        return out
    engine = per_model_epoch[f"engine_{n}"]
    ratios = {
        f"speedup_{n}": [p / e for p, e in zip(per_model_epoch["paper_loop"], engine, strict=True)],
        f"floor_ratio_{n}": [e / floor for e in engine],
    }
    if "paper_loop_torchvision" in per_model_epoch:
        ratios[f"speedup_{n}_torchvision"] = [
            p / e for p, e in zip(per_model_epoch["paper_loop_torchvision"], engine, strict=True)
        ]
    for name, values in ratios.items():
        out[name], out[f"{name}_spread"] = summarise(values)
    return out
