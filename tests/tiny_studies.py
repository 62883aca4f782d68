"""Tiny study files for the study, store, protocol and CLI tests (written into tmp folders)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HEADER = """
name = "{name}"
protocol = "{protocol}"
selection = "{selection}"
n_seeds = {n_seeds}
max_epochs = {max_epochs}
patience = 3
[normalization]
mean = 0.5
std = 0.5
[validation]
size = 250
seed = 0
[space]
topology = ["T1", "T2"]
optimizer = ["sgd", "adam"]
lr = [0.01, 0.05]
activation = ["relu"]
"""

STAGES = """
[start]
optimizer = "sgd"
lr = 0.01
activation = "relu"
[[stages]]
factor = "topology"
published = [85.2, 87.1]
[[stages]]
factor = "optimizer"
[[stages]]
factor = "lr"
"""

# A replicate study's own part, after HEADER's [space] (or another): the paper's path T2 (87.1)
# -> Adam (89.5) -> lr 0.01 (89.0), six published numbers on four distinct configurations.
REPLICATE = """
[replicate]
staged_seeds = 1
[start]
optimizer = "sgd"
lr = 0.01
activation = "relu"
[[stages]]
name = "topology"
factor = "topology"
title = "Table I: accuracy of different topologies"
published = [85.2, 87.1]
[[stages]]
name = "optimizer"
factor = "optimizer"
published = [89.0, 89.5]
[[stages]]
name = "learning_rate"
factor = "lr"
published = [89.0, 87.5]
[published]
final_accuracy = 89.0
"""

# Quick-try options every test run uses: small slices of the real data.
QUICK = ["--limit-train", "320", "--limit-eval", "250"]


def write_study(
    folder: Path,
    *,
    name: str = "tiny",
    protocol: str = "staged",
    selection: str = "test",
    n_seeds: int = 1,
    max_epochs: int = 2,
    extra: str = "",
) -> Path:
    text = HEADER.format(name=name, protocol=protocol, selection=selection, n_seeds=n_seeds,
                         max_epochs=max_epochs)  # fmt: skip
    if protocol == "staged":
        text += STAGES
    path = Path(folder) / f"{name}.toml"
    path.write_text(text + extra, encoding="utf-8")
    return path


def hpstudy_cmd(*args: str) -> list[str]:
    """`hpstudy ARGS` as a subprocess command line (this interpreter)."""
    return [sys.executable, "-m", "hpstudy.cli", *args]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # several processes share 2 cores
    return env


def stick_sampler_on(monkeypatch, config, *, max_repeats: int) -> None:
    """Make the search's sampler propose only `config` (a trained point it is stuck on) and stop
    after `max_repeats` repeats in a row: how the repeat bound is tested."""
    from hpstudy.protocols.search import SearchProtocol
    from hpstudy.storage.keys import params_of
    from hpstudy.storage.search import Searcher

    ask = Searcher.ask

    def ask_known(self):
        self.store._optuna.enqueue_trial(params_of(config, self.names))
        return ask(self)

    monkeypatch.setattr(Searcher, "ask", ask_known)
    monkeypatch.setattr(SearchProtocol, "max_repeats", max_repeats)
