"""The report's method in full and its "reproduce and cost" block.

    >>> blocks = method_section(view) + reproduce_section(view, report_command)

The method names every choice a reader needs to redo the training by hand (loss, initialisation,
each optimizer's arguments, the LeakyReLU slope, shuffling). The reproduce block says what
produced these numbers and what they cost: the exact command, the git commit, package versions,
the CPU or GPU and its threads, wall time, model-epochs and FLOPs.
"""

from __future__ import annotations

import shlex

from hpstudy.config.config import LEAKY_RELU_SLOPE, MAX_SHIFT
from hpstudy.report.loader import RunView
from hpstudy.report.render import Block, Heading, Text
from hpstudy.report.report_tables import key_value_table


def method_section(view: RunView) -> list[Block]:
    study = view.study
    norm = view.split.get("normalization") or study.normalization
    auto = " (from the training split)" if norm.get("from") else ""
    split = "the test set (the paper's leak)" if view.is_leaky else "a validation split"
    text = (
        f"Data: {study.data_label}. Inputs: pixels scaled by 1/255 (feature values as they "
        f"are), then (x - {norm['mean']:g}) / {norm['std']:g}{auto}, flattened to "
        f"{study.n_inputs} values. Model: {_model_text(view)}, {study.n_classes} logits "
        "out. Loss: cross-entropy (mean over the batch). Initialisation: PyTorch's default "
        "for `nn.Linear` and `nn.Conv2d` (Kaiming-uniform weights with a = √5, biases "
        "uniform in ±1/√fan_in), drawn after `torch.manual_seed(seed)`. Optimizers: "
        "`torch.optim` with the row's learning rate and the arguments the row lists "
        "(momentum, Nesterov, weight decay, betas, a schedule stepped per epoch), torch's "
        "defaults for the rest: SGD without momentum, dampening, Nesterov or weight decay; "
        "Adam with betas (0.9, 0.999), eps 1e-8, no weight decay, no AMSGrad; RMSprop with "
        "alpha 0.99, eps 1e-8, no momentum, not centred. LeakyReLU slope "
        f"{LEAKY_RELU_SLOPE:g}; ELU alpha 1. Shuffling: epoch e of seed s visits the training "
        "images in the order of `torch.randperm` from a generator seeded by "
        f"`SeedSequence([s, e])` (`hpstudy.engine.batch_order`), in batches of "
        f"{study.batch_size} (the last one smaller). Each epoch ends with an evaluation on "
        f"{split}; training stops after {study.patience} epochs without a strictly better "
        f"accuracy, or at {study.max_epochs} epochs; the best epoch's accuracy is the "
        "trial's number."
    )
    if any(r.config.augment != "none" for r in view.finished):
        text += (
            " Augmentation (the trials that list it): each training image of an epoch is "
            f"shifted by up to {MAX_SHIFT} pixels each way, the border's pixels repeated into "
            "the gap, then flipped left-right with probability 1/2 (`flip` or `shift` alone: "
            "that part only), drawn per position of the epoch's order from a generator seeded "
            "by `SeedSequence([s, e, 2])` (`hpstudy.engine.augment`); evaluation images are "
            "never augmented."
        )
    return [Heading(2, "Method in full", "method"), Text(text)]


def _model_text(view: RunView) -> str:
    """The architecture in words: fully connected, or convolution blocks then dense layers."""
    dense = "fully connected layers of the topology's widths with the activation after each"
    if not any(r.config.is_cnn for r in view.finished):
        return dense + " hidden layer"
    return ("for the trials with convolutions (`conv`), the images reshaped to one channel, "
            "then per block `Conv2d` (same padding), `BatchNorm2d` where the trial lists it and "
            "the activation, `convs_per_block` times (once unless the trial lists more), and "
            "2x2 max-pooling, flattened; then " + dense + " hidden layer "
            "(and `Dropout` after it where the trial lists it)")  # fmt: skip


def reproduce_section(view: RunView, report_command: str) -> list[Block]:
    """Command, commit, versions, hardware, wall time, model-epochs and FLOPs of the run."""
    from hpstudy.config.cost import model_epoch_flops

    info, finished = view.info, view.finished
    machine = info.get("machine", {})
    epochs = sum(r.epochs for r in finished)
    flops = sum(model_epoch_flops(r.config, r.n_train) * r.epochs for r in finished)
    how = "6 × parameters × images per model-epoch"
    if any(r.config.is_cnn for r in finished):
        how = "per image: 6 × dense weights + 3 × convolution forward FLOPs"
    wall = sum(r.wall_s for r in finished)
    versions = {k: v for r in finished for k, v in r.versions.items()}
    versions |= machine.get("packages", {})
    elapsed = info.get("elapsed_s")
    rows = [
        ("command", shlex.join(map(str, info.get("command", []))) or "–"),
        ("git commit", machine.get("git_commit") or "not run from a git checkout"),
        ("packages", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "–"),
        ("device", machine.get("device_name") or info.get("device", "")),
        ("threads", str(machine.get("threads", "–"))),
        ("end-to-end time", f"{elapsed:.1f} s (last `hpstudy run`)" if elapsed else "–"),
        ("training wall time", f"{wall:.1f} s over {len(finished)} trials"),
        ("model-epochs", f"{epochs:,}"),
        ("training FLOPs", f"{flops:.3g} ({how})"),
        ("rerun", "the same command resumes and trains nothing twice; `--fresh` retrains "
                  "from the same seeds"),
        ("report command", report_command),
    ]  # fmt: skip
    note = (
        "A trial's numbers depend on its configuration, seed, split, dtype and device; "
        "float32 results can differ in the last bits across CPU models and thread counts."
    )
    return [Heading(2, "Reproduce and cost", "reproduce"),
            key_value_table("reproduce", "How to reproduce this run, and what it cost", rows,
                            note)]  # fmt: skip
