"""`hpstudy eda` end to end, and the library functions it is made of (hpstudy.data.eda)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from PIL import Image

from hpstudy.cli import main
from hpstudy.data import eda, fashion_mnist
from hpstudy.errors import UserError

pytestmark = pytest.mark.slow  # its module fixture summarises all 70,000 images


@pytest.fixture(scope="module")
def eda_run(tmp_path_factory):
    """One run of `hpstudy eda` on the Debian copy: (exit code, stdout, stderr, out folder)."""
    out = tmp_path_factory.mktemp("eda") / "nested" / "out"  # missing parents get created
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["eda", "--out", str(out), "--data-dir", str(fashion_mnist.DEBIAN_DIR)])
    return code, stdout.getvalue(), stderr.getvalue(), out


def test_exit_code_and_files(eda_run):
    code, _, err, out = eda_run
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "eda_class_distribution.png",
        "eda_samples.png",
    ]  # and no temporary file left behind


def test_class_distribution_png(eda_run):
    path = eda_run[3] / "eda_class_distribution.png"
    with Image.open(path) as img:
        img.verify()  # a complete, valid PNG
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (1000, 500)
        # Not blank: the bars cover a good share of the pixels in at least two colours.
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    n_colours = len(np.unique(pixels, axis=0))
    assert n_colours > 20
    assert (pixels != 255).any(axis=1).mean() > 0.1


def test_samples_png(eda_run):
    path = eda_run[3] / "eda_samples.png"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        # 1.2 in of class names + 10 images of 0.8 in, 10 rows of 0.8 in, at 100 dpi.
        assert img.size == (920, 800)
        grey = np.asarray(img.convert("L"), dtype=np.float64)
    # The sample area holds real garments: far from blank and not saturated.
    samples = grey[:, 120:]
    assert 0.1 < (samples < 250).mean() < 0.9


def test_printed_names_counts_and_stats(eda_run):
    _, out_text, _, out = eda_run
    lines = out_text.splitlines()
    for label, name in enumerate(fashion_mnist.CLASS_NAMES):
        row = next(line for line in lines if line.split()[:1] == [str(label)])
        assert row.split()[1:] == [*name.split(), "6,000", "1,000"], row
    assert any(line.split() == ["total", "60,000", "10,000"] for line in lines)
    assert "training pixels on [0, 1]: mean 0.2860, std 0.3530" in lines
    assert f"wrote {out / 'eda_class_distribution.png'}" in lines
    assert f"wrote {out / 'eda_samples.png'}" in lines
    names_in_order = [name for name in fashion_mnist.CLASS_NAMES if name in out_text]
    assert names_in_order == [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]


def test_summary_values(fashion):
    summary = eda.summarize(fashion)
    assert summary.train_counts.tolist() == [6000] * 10
    assert summary.test_counts.tolist() == [1000] * 10
    assert summary.pixel_mean == pytest.approx(0.2860405969887955, abs=1e-12)
    assert summary.pixel_std == pytest.approx(0.35302424451492237, abs=1e-12)


def test_pixel_stats_on_a_known_image():
    images = np.array([[[0, 255], [255, 255]]], dtype=np.uint8)  # three ones and a zero
    mean, std = eda.pixel_stats(images)
    assert mean == pytest.approx(0.75)
    assert std == pytest.approx(np.sqrt(0.1875))


def test_plot_class_distribution_is_reusable(tmp_path):
    # The report calls it with its own counts; a list works as well as an array.
    path = eda.plot_class_distribution(
        [5, 4, 3], [1, 2, 3], tmp_path / "d.png", class_names=["a", "b", "c"]
    )
    with Image.open(path) as img:
        assert img.size == (1000, 500)
    with pytest.raises(UserError, match="got 3 train counts, 2 test counts and 10 class names"):
        eda.plot_class_distribution([1, 2, 3], [1, 2], tmp_path / "bad.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.png"]


def test_the_class_plot_says_nothing_on_a_busy_machine(tmp_path, monkeypatch):
    """matplotlib warns when placing a legend at "best" takes over a second: CI saw it once
    under load. A clock that jumps 2 s a reading stands in for the busy machine."""
    import warnings

    import matplotlib.legend

    ticks = iter(range(0, 10**6, 2))
    monkeypatch.setattr(matplotlib.legend.time, "perf_counter", lambda: float(next(ticks)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eda.plot_class_distribution([6000] * 10, [1000] * 10, tmp_path / "d.png")


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    code = main(["eda", "--out", str(target), "--data-dir", str(fashion_mnist.DEBIAN_DIR)])
    err = capsys.readouterr().err
    assert code == UserError.exit_code
    assert (
        err == f"hpstudy eda: error: --out {target} is a file; give a folder for the EDA figures\n"
    )
    assert target.read_text() == "not a folder"
