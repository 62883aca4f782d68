"""A wheel of hpstudy, installed in a fresh venv, runs a named study and the README's Python
example outside the checkout."""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from test_api import readme_example
from tiny_studies import subprocess_env

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory) -> Path:
    """The python of a fresh venv holding only the wheel built from this checkout."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
             "-w", str(wheels), str(ROOT)]  # fmt: skip
    subprocess.run(build, check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("hpstudy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hpstudy/studies/paper.toml" in names and "hpstudy/studies/replicate.toml" in names
    assert "hpstudy/api.py" in names
    # A fresh venv with the wheel; its dependencies (torch, optuna, ...) come from this test's
    # environment through a .pth line, so nothing is downloaded.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (purelib,) = venv.glob("lib/python*/site-packages")
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
               "--target", str(purelib), str(wheel)]  # fmt: skip
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    return venv / "bin" / "python"


def outside_env() -> dict[str, str]:
    """The environment of a process outside the checkout: no PYTHONPATH pointing into it."""
    env = subprocess_env()
    env.pop("PYTHONPATH", None)
    return env


# Run first in every child: the hpstudy it imports is the wheel's, not the checkout's.
FROM_WHEEL = "import hpstudy; assert 'site-packages' in hpstudy.__file__, hpstudy.__file__"


def test_a_wheel_install_runs_the_paper_study_outside_the_checkout(venv_python, tmp_path):
    code = f"{FROM_WHEEL}; import sys; from hpstudy.cli import main; sys.exit(main())"
    done = subprocess.run(
        [str(venv_python), "-c", code, "run", "paper", "--max-epochs", "1",
         "--limit-train", "1000", "--limit-eval", "500", "--no-report", "--out", "run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=outside_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run" / "tables" / "4_activation.json").is_file()
    assert (tmp_path / "run" / "final_best_model.pth").is_file()


def test_a_wheel_install_runs_the_readme_python_example_outside_the_checkout(venv_python, tmp_path):
    (tmp_path / "example.py").write_text(readme_example(), encoding="utf-8")
    code = f"{FROM_WHEEL}; import runpy; runpy.run_path('example.py', run_name='__main__')"
    done = subprocess.run([str(venv_python), "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env=outside_env())  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "validation" in done.stdout.splitlines()[0]  # print(run.best)
    assert (tmp_path / "runs" / "digits-api" / "final_best_model.pth").is_file()
