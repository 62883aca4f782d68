"""The report's method in full and its "reproduce and cost" block.

    >>> blocks = method_section(view) + reproduce_section(view, report_command)

The method names every choice a reader needs to redo the training by hand (loss, initialisation,
each optimizer's arguments, the LeakyReLU slope, shuffling). The reproduce block says what
produced these numbers and what they cost: the exact command, the git commit, package versions,
the CPU or GPU and its threads, wall time, model-epochs and FLOPs.
"""

from __future__ import annotations

import shlex

from hpstudy.config.choices import LEAKY_RELU_SLOPE, MAX_SHIFT
from hpstudy.config.study import ProtocolKind
from hpstudy.report.loader import RunView, published_numbers
from hpstudy.report.render import Block, Code, Heading, Text
from hpstudy.report.report_tables import Table, key_value_table


def method_section(view: RunView) -> list[Block]:
    study = view.study
    norm = view.split.get("normalization") or study.normalization
    auto = " (from the training split)" if norm.get("from") else ""
    split = "the test set (the leak)" if view.is_leaky else "a validation split"
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
    blocks: list[Block] = [Heading(2, "Method in full", "method"), Text(text)]
    table = parameters_table(view)
    return blocks + ([table] if table is not None else [])


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


# What the paper states about its topologies' sizes (Discussion): T5 "1.5 million parameters
# (compared to T4's 300,000)"; it states no other count.
PAPER_PARAMETERS = {"T4": "300,000", "T5": "1.5 million"}
SPREAD_PP = 1.0  # seeds' sd (points) above which a cell's rerun on another CPU may move


def parameters_table(view: RunView):
    """Weights and biases per topology the run trained, beside what the paper says of them."""
    from hpstudy.config.choices import TOPOLOGIES
    from hpstudy.config.cost import n_parameters

    names = {shape: name for name, shape in TOPOLOGIES.items()}
    seen = {}
    for r in view.finished:
        if not r.config.is_cnn:
            seen.setdefault(tuple(r.config.topology), r.config)
    if not seen:
        return None
    rows = []
    mention = view.protocol is ProtocolKind.REPLICATE or bool(published_numbers(view))
    for shape, config in sorted(seen.items(), key=lambda kv: n_parameters(kv[1])):
        name = names.get(shape, "")
        layers = str([view.study.n_inputs, *shape, view.study.n_classes])
        row = (name or "–", layers, f"{n_parameters(config):,}")
        rows.append(row + ((PAPER_PARAMETERS.get(name, "–"),) if mention else ()))
    columns = ("topology", "layers", "parameters (weights and biases)")
    columns += ("the paper says",) if mention else ()
    note = ("Counted as the engine builds the model: each layer's weights and biases. The "
            "paper states two sizes, in its discussion: T5 '1.5 million parameters (compared "
            "to T4's 300,000)'.") if mention else "Each layer's weights and biases."  # fmt: skip
    return Table("parameters", "Parameters per topology", columns, tuple(rows), (note,))


def reproduce_section(view: RunView, report_command: str, replication: dict | None = None,
                      csv_name: str = "") -> list[Block]:  # fmt: skip
    """From a clean machine to the same numbers, and what a rerun matches; what it cost."""
    from hpstudy.config.config import is_chaotic
    from hpstudy.config.cost import model_epoch_flops
    from hpstudy.storage.rundir import machine_info

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
    command = shlex.join(map(str, info.get("command", []))) or "–"
    commit = machine.get("git_commit") or ""
    device = machine.get("device_name") or info.get("device", "")
    threads = str(machine.get("threads", "–"))
    # The vector extensions decide which float32 kernels ran. run.json records them where the
    # run did; else they are read here, and only trusted if this is the same CPU model.
    vector = machine.get("cpu_capability")
    if not vector and info.get("device", "cpu") == "cpu":
        here_info = machine_info("cpu")
        here = here_info.get("device_name")
        vector = (f"{here_info.get('cpu_capability')} (read where the report was "
                  "written, the same CPU model)" if here == device
                  else f"not recorded by the run (this machine, a {here}, is another "
                  "model)")  # fmt: skip
    chaotic = sorted({_config_label(r.config) for r in finished if is_chaotic(r.config)})
    spread = list(dict.fromkeys(f"Table {c['table']} {c['row']}"
                                for c in (replication or {}).get("cells", [])
                                if _spread_pp(c) > SPREAD_PP))  # fmt: skip
    rerun = (f"Bit for bit on the same machine: the same CPU model and vector extensions, "
             f"{threads} thread(s), the same package versions and commit (rerunning the command "
             "resumes and trains nothing twice; `--fresh` retrains from the same seeds). On "
             "another CPU, float32 sums may round differently in the last bit; most cells "
             "still agree, but a cell whose training amplifies rounding may not")  # fmt: skip
    if chaotic:
        rerun += (f": the engine flags {len(chaotic)} configuration(s) as chaotic (Adam at lr "
                  f">= 0.05, RMSprop at lr >= 0.01): {'; '.join(chaotic)}")  # fmt: skip
    if spread:
        rerun += (f"; and cells whose seeds spread by more than {SPREAD_PP:g} pp (sd) may move "
                  f"within that spread: {', '.join(spread)}")  # fmt: skip
    rerun += "."
    rows = [
        ("command", command),
        ("git commit", commit or "not run from a git checkout"),
        ("packages", ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "–"),
        ("device", device),
        ("vector extensions", vector or "–"),
        ("threads", threads),
        ("end-to-end time", f"{elapsed:.1f} s (last `hpstudy run`)" if elapsed else "–"),
        ("training wall time", f"{wall:.1f} s over {len(finished)} trials"),
        ("model-epochs", f"{epochs:,}"),
        ("training FLOPs", f"{flops:.3g} ({how})"),
        ("report command", report_command),
    ]  # fmt: skip
    steps = ["git clone <the hpstudy repository> hpstudy && cd hpstudy"]
    steps += [f"git checkout {commit.split()[0]}"] if commit else []
    if view.protocol is ProtocolKind.REPLICATE:
        steps += ["make run    # venv, install, the data, then `hpstudy run replicate`"]
    else:
        steps += ["make setup  # venv, install, the data"]
    steps += [f"{command}    # the exact command of this run", report_command]
    blocks: list[Block] = [
        Heading(2, "Reproduce and cost", "reproduce"),
        Code("\n".join(steps), "From a clean machine to these numbers"),
        Text("What a rerun matches: " + rerun),
        key_value_table("reproduce", "How this run was made, and what it cost", rows),
    ]
    if csv_name:
        blocks.append(Text(f"Every seed of every cell as a table for your own analysis: "
                           f"[{csv_name}]({csv_name}) (beside this report)."))  # fmt: skip
    return blocks


def _spread_pp(cell: dict) -> float:
    """A cell's sd over seeds in points: replication.json's `sd` (an older file: its seeds')."""
    import statistics

    if cell.get("sd") is not None:
        return float(cell["sd"])
    seeds = [a for a in cell.get("accuracies", []) if a is not None]
    return statistics.stdev(seeds) if len(seeds) > 1 else 0.0


def _config_label(config) -> str:
    from hpstudy.config.factors import config_text

    return config_text(config)
