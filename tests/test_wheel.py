"""A wheel of hpstudy, installed in a fresh venv, runs a named study outside the checkout."""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tiny_studies import subprocess_env

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_a_wheel_install_runs_the_paper_study_outside_the_checkout(tmp_path: Path):
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
             "-w", str(wheels), str(ROOT)]  # fmt: skip
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("hpstudy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hpstudy/studies/paper.toml" in names and "hpstudy/studies/replicate.toml" in names
    # A fresh venv with the wheel; its dependencies (torch, optuna, ...) come from this test's
    # environment through a .pth line, so nothing is downloaded.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (purelib,) = venv.glob("lib/python*/site-packages")
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
               "--target", str(purelib), str(wheel)]  # fmt: skip
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    code = (
        "import hpstudy, sys; from hpstudy.cli import main; "
        "assert 'site-packages' in hpstudy.__file__, hpstudy.__file__; sys.exit(main())"
    )
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code, "run", "paper", "--max-epochs", "1",
         "--limit-train", "1000", "--limit-eval", "500", "--no-report", "--out", "run"],
        cwd=outside, capture_output=True, text=True, timeout=600, env=subprocess_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (outside / "run" / "tables" / "4_activation.json").is_file()
    assert (outside / "run" / "final_best_model.pth").is_file()
