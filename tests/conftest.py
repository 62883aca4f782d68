"""Shared fixtures: the real FashionMNIST files, loaded once per test session."""

from __future__ import annotations

import pytest

from hpstudy import data


@pytest.fixture(scope="session")
def fashion() -> data.FashionMNIST:
    """The canonical dataset (installed by `make test` via dataset-fashion-mnist)."""
    return data.load(download=False)
