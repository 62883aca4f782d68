"""What one CNN member-step costs on a GPU, eager or replayed from a CUDA graph, with and without
augmentation and dropout; whether a dropout member's own generator can be replayed from a
graph; and whether one member trained twice alone ends with the same bits, with cuDNN's
deterministic algorithms (as training now asks) and without. These decided that graphing
augmented and dropout steps was worth building; the last variant measures what it gives.

    python3 benchmarks/cnn_gpu_probe.py                 # CUDA only; a table, a line per probe
    python3 benchmarks/cnn_gpu_probe.py determinism     # the determinism probe alone (~20 s)

The shape is studies/cnn-gpu.toml's design 1 (conv 64-128-256, one convolution per block,
batch norm, dense 256, Adam, batch 128) in float32 with TF32, as that study ran. Each variant
trains `STEPS` steps once to warm up (and capture), then `STEPS` timed steps; 'kernels' is the
GPU's own time for those steps by the profiler, so wall - kernels is what launching from
Python costs.
"""

from __future__ import annotations

import contextlib
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from hpstudy import Config
from hpstudy.data.sources import load
from hpstudy.engine import make_split
from hpstudy.engine.cnn import CNNPopulation
from hpstudy.engine.flops import training_numerics
from hpstudy.engine.optimizers import StackedOptimizer
from hpstudy.engine.population import member_order_key
from hpstudy.engine.steps import StepRunner

STEPS = 60
SHAPE = dict(topology=(256,), conv=(64, 128, 256), batch_norm=True, optimizer="adam",
             batch_size=128, max_epochs=30)  # fmt: skip


def members(n: int, **factors) -> list[Config]:
    base = Config(**SHAPE, lr=1e-3, **factors)
    return sorted([base.replace(lr=1e-3 * (1 + i / 10)) for i in range(n)], key=member_order_key)


def step_cost(train, configs, graphs: bool) -> tuple[float, float]:
    """(wall, kernel) seconds per member-step."""
    pop = CNNPopulation.from_configs(configs, device=train.x.device, dtype=torch.float32)
    runner = StepRunner(pop, StackedOptimizer(pop), train, cuda_graph=graphs)
    runner.epoch(1, max_steps=STEPS)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        runner.epoch(2, max_steps=STEPS)
        torch.cuda.synchronize()
        wall = time.perf_counter() - started
    kernel_us = sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages())
    n = STEPS * len(configs)
    return wall / n, kernel_us * 1e-6 / n


def generator_probe() -> str:
    """Can a CUDA graph replay draws from a non-default generator, reseeded between replays?"""
    generator = torch.Generator(device="cuda")

    def draw() -> torch.Tensor:
        return torch.rand((128, 256), generator=generator, device="cuda")

    generator.manual_seed(7)
    eager = [draw() for _ in range(3)]
    graph = torch.cuda.CUDAGraph()
    try:
        graph.register_generator_state(generator)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            draw()
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            out = draw()
        generator.manual_seed(7)
        replays = []
        for _ in range(3):
            graph.replay()
            replays.append(out.clone())
        generator.manual_seed(8)
        graph.replay()
        reseeded = out.clone()
        generator.manual_seed(8)
        fresh = draw()
    except Exception as exc:  # a probe reports whatever fails
        return f"generator probe: {type(exc).__name__}: {exc}"
    same = all(torch.equal(a, b) for a, b in zip(eager, replays, strict=True))
    return (f"generator probe: graph replays equal the eager draws: {same}; "
            f"after manual_seed(8): {torch.equal(reseeded, fresh)}")  # fmt: skip


def determinism_probe(dataset) -> str:
    """Train one augmented dropout CNN member twice alone (2,000 images, 2 epochs, float32),
    with cuDNN's deterministic algorithms, as training asks for them, and without: do the two
    trainings end with the same bits? (The H200 showed batch norm's weights a few bits apart.)"""
    from hpstudy.engine import train, training

    split = make_split(dataset.train_images[:2000], dataset.train_labels[:2000], mean=0.5,
                       std=0.5, dtype=torch.float32).to("cuda", torch.float32)  # fmt: skip
    config = members(1, augment="flip_shift", dropout=0.3)[0].replace(max_epochs=2)
    strict = training.training_numerics

    @contextlib.contextmanager
    def loose(tf32: bool):  # training's settings but for cuDNN's deterministic algorithms
        with strict(tf32):
            torch.backends.cudnn.deterministic = False
            yield

    lines = []
    for name, numerics in (("deterministic cuDNN", strict), ("torch's default cuDNN", loose)):
        training.training_numerics = numerics
        try:
            first, second = (train([config], split, split, device="cuda")[0].state_dict
                             for _ in range(2))  # fmt: skip
        finally:
            training.training_numerics = strict
        differ = [k for k in first if not torch.equal(first[k], second[k])]
        gap = max(((first[k] - second[k]).abs().max().item() for k in differ), default=0.0)
        lines.append(f"{name}: {len(differ)} of {len(first)} tensors differ (largest gap "
                     f"{gap:.3g}{', first ' + differ[0] if differ else ''})")  # fmt: skip
    return "determinism probe: " + "; ".join(lines)


def main() -> None:
    dataset = load(download=False)
    if sys.argv[1:] == ["determinism"]:
        print(determinism_probe(dataset))
        return
    train = make_split(dataset.train_images, dataset.train_labels, mean=0.5, std=0.5,
                       dtype=torch.float32).to("cuda", torch.float32)  # fmt: skip
    print(torch.cuda.get_device_name(), "torch", torch.__version__, f"{STEPS} steps per variant")
    variants = [
        ("plain, 1 member, eager", members(1), False),
        ("plain, 4 members, eager", members(4), False),
        ("plain, 4 members, graphs", members(4), True),
        ("augmented, 4 members, eager", members(4, augment="flip_shift"), False),
        ("augmented + dropout, 4, eager", members(4, augment="flip_shift", dropout=0.3), False),
        ("augmented + dropout, 4, graphs", members(4, augment="flip_shift", dropout=0.3), True),
    ]
    print(f"{'variant':32} {'ms/member-step':>15} {'kernels ms':>11} {'s/model-epoch':>14}")
    with training_numerics(True):
        for name, configs, graphs in variants:
            wall, kernels = step_cost(train, configs, graphs)
            per_epoch = wall * -(-54_000 // SHAPE["batch_size"])
            print(f"{name:32} {1e3 * wall:15.3f} {1e3 * kernels:11.3f} {per_epoch:14.3f}")
    print(generator_probe())
    print(determinism_probe(dataset))


if __name__ == "__main__":
    main()
