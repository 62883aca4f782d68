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
