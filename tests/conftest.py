"""Shared fixtures: the real FashionMNIST files, loaded once per test session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from hpstudy.data import fashion_mnist, sources


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A run in this process with `threads=1` sets torch's thread count for the process: put it
    back, so no test's speed depends on which tests ran before it."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def fashion() -> fashion_mnist.FashionMNIST:
    """The canonical dataset (installed by `make test` via dataset-fashion-mnist)."""
    return sources.load(download=False)


@pytest.fixture
def copy_dir(tmp_path) -> Path:
    """A folder with the four real .gz files, ready to be damaged one at a time."""
    folder = tmp_path / "fm"
    folder.mkdir()
    for name in fashion_mnist.FILES.values():
        shutil.copyfile(fashion_mnist.DEBIAN_DIR / f"{name}.gz", folder / f"{name}.gz")
    return folder


# The slow tier: whole studies, the browser, PostgreSQL, process kills and wheel builds. A slow
# test says so where it is defined (`@pytest.mark.slow`, or `pytestmark` for a whole module);
# two rules add the rest: tests that use a fixture that runs a study, and browser and PostgreSQL
# tests. `make test-fast` (pytest -m "not slow") runs the rest in under a minute; `make test` and
# CI run everything.
SLOW_FIXTURES = {"report_runs", "replicated", "replicated_run", "digits_run"}
SLOW_MARKERS = ("browser", "postgres")


def pytest_collection_modifyitems(config, items):
    for item in items:
        uses_slow_fixture = SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
        if uses_slow_fixture or any(item.get_closest_marker(m) for m in SLOW_MARKERS):
            item.add_marker(pytest.mark.slow)
