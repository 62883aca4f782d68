"""report.html in a real browser: headless Chromium loads every image and shows every table.

A copy of the report gets a small script that, once the page has loaded, writes each image's
natural width and each table's id into the DOM; `chromium --dump-dom` prints that DOM. The report
itself carries no script. A screenshot is saved as test-artifacts/report.png (git-ignored).
Skipped, saying why, where Debian's `chromium` is not installed.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_replicate import replicated, replicated_run  # noqa: F401 - a tiny replicate run, its report
from test_report import report_runs  # noqa: F401 - the session fixture, shared with this module

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
PROBE = r"""<script>
window.addEventListener("load", () => {
  const out = window.parent.document.createElement("pre");  // the top page, if framed
  out.id = "hpstudy-probe";
  out.textContent = JSON.stringify({
    images: [...document.images].map(img => [img.alt, img.complete, img.naturalWidth]),
    tables: [...document.querySelectorAll("table")].map(t => [t.id, t.rows.length]),
    page: [window.innerWidth, document.documentElement.scrollWidth],
    shown: [...document.images].map(img => [img.clientWidth, img.parentElement.tagName]),
    // Bottom edge (px from the top of the page) of each paragraph a test looks for by id.
    bottoms: Object.fromEntries(["headline", "counts"].map(id => {
      const el = document.getElementById(id);
      return [id, el ? el.getBoundingClientRect().bottom + window.scrollY : null];
    })),
    screen: window.innerHeight,
    // Words of table cells that the browser broke across two lines: a word is what lies
    // between spaces; tokens marked long (digests, paths) and code may break anywhere.
    broken: (() => {
      const found = [];
      for (const cell of document.querySelectorAll("td, th")) {
        const walk = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
        for (let node = walk.nextNode(); node; node = walk.nextNode()) {
          if (node.parentElement.closest(".long, code")) continue;
          const re = /\S+/g;
          for (let m = re.exec(node.data); m; m = re.exec(node.data)) {
            const range = document.createRange();
            range.setStart(node, m.index);
            range.setEnd(node, m.index + m[0].length);
            const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
            if (tops.size > 1) found.push(m[0]);
          }
        }
      }
      return found;
    })(),
  });
  window.parent.document.body.appendChild(out);
});
</script>"""

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs headless Chromium: apt-get install chromium"
    ),
]


def chromium(*args: str, timeout: float = 90) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--disable-extensions", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def probe(page: Path, tmp_path: Path, width: int | None = None, height: int = 900) -> dict:
    """What the browser loaded: {'images': [[alt, complete, naturalWidth]], 'tables': [[id, n]],
    'page': [viewport width, document width], 'shown': [[shown width, parent tag]],
    'bottoms': {id: bottom edge in px}, 'screen': viewport height, 'broken': [words of table
    cells broken across lines]}.

    `width` x `height`: the viewport, through an iframe of that size (headless Chromium's window
    is at least 500 px wide, so a phone's 400 px needs a frame)."""
    text = page.read_text(encoding="utf-8")
    probed = tmp_path / f"probe-{page.parent.name}.html"
    probed.write_text(text.replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    if width is not None:
        framed = tmp_path / f"frame-{width}.html"
        framed.write_text(
            f'<html><body style="margin:0"><iframe src="{probed.name}" '
            f'width="{width}" height="{height}" style="border:0"></iframe></body></html>'
        )
        probed = framed
    # A virtual-time budget lets the load event (and the probe) run before the DOM is dumped.
    dom = chromium("--virtual-time-budget=10000", "--allow-file-access-from-files",
                   "--window-size=1500,900", "--dump-dom", probed.as_uri())  # fmt: skip
    found = re.search(r'<pre id="hpstudy-probe">(.*?)</pre>', dom, re.S)
    assert found, "the probe did not run: the page never finished loading"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_probe_detects_a_broken_image(tmp_path):
    """The check can fail: an image that does not decode has natural width 0."""
    page = tmp_path / "broken" / "report.html"
    page.parent.mkdir()
    page.write_text('<html><body><img alt="bad" src="data:image/png;base64,AAAA">'
                    '<table id="t"><tr><td>1</td></tr></table></body></html>')  # fmt: skip
    seen = probe(page, tmp_path)
    assert seen["images"] == [["bad", True, 0]]
    assert seen["tables"] == [["t", 1]]


@pytest.mark.parametrize("name", ["paper", "grid"])
def test_every_image_loads_and_every_table_is_there(report_runs, tmp_path, name):  # noqa: F811
    run = report_runs[name]
    page = run / "report.html"
    seen = probe(page, tmp_path)
    n_images = len(re.findall(r"<img ", page.read_text(encoding="utf-8")))
    assert len(seen["images"]) == n_images >= 3  # a balanced class chart is left out
    broken = [alt for alt, complete, width in seen["images"] if not (complete and width > 0)]
    assert not broken, f"images that did not load: {broken}"
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    shown = {table_id: n_rows for table_id, n_rows in seen["tables"]}
    for key, table in report["tables"].items():  # every table, with all its rows
        assert shown.get(key) == len(table["rows"]) + 1, key
    expected = {
        "paper": ["table-1-topology", "table-2-optimizer", "table-3-learning_rate",
                  "table-4-activation", "final-model", "per-class", "confused-pairs",
                  "leakage-gap-clean", "staged-vs-grid", "provenance", "costs"],
        "grid": ["best-grid", "final-model", "main-effects", "importances", "staged-vs-grid",
                 "provenance"],
    }[name]  # fmt: skip
    assert set(expected) <= set(shown)


@pytest.mark.parametrize("width", [420, 1400])
def test_figures_are_sharp_linked_and_nothing_overflows(report_runs, tmp_path, width):  # noqa: F811
    seen = probe(report_runs["paper"] / "report.html", tmp_path, width)
    inner, scroll = seen["page"]
    assert inner == width and scroll <= inner, "the page scrolls sideways: something overflows"
    for (alt, _, natural), (shown, parent) in zip(seen["images"], seen["shown"], strict=True):
        assert parent == "A", f"{alt!r} does not open full size on click"
        assert 0 < shown <= inner
        if width == 1400:  # drawn at 2x: at least twice the pixels the page shows
            assert natural >= 1.9 * shown, (alt, natural, shown)


PHONE, DESKTOP = (400, 780), (1400, 900)  # first screens: a phone upright, a laptop window


@pytest.mark.slow
@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["400px", "1400px"])
def test_answer_on_first_screen_and_no_cell_breaks_a_word(replicated, tmp_path, size):  # noqa: F811
    """A replication's headline sentence and its counts fit the first screen of a phone and of
    a desktop, and no table cell is narrower than its longest word."""
    width, height = size
    seen = probe(replicated / "report.html", tmp_path, width, height)
    assert seen["screen"] == height
    for key in ("headline", "counts"):
        bottom = seen["bottoms"][key]
        assert bottom is not None, f"no #{key} paragraph on the page"
        assert bottom <= height, f"#{key} ends at {bottom:.0f} px, below the first {height} px"
    assert not seen["broken"], f"table cells break words at {width} px: {seen['broken'][:12]}"
    assert seen["page"][1] <= width, "the page scrolls sideways"


def test_the_word_check_can_fail(tmp_path):
    """A cell squeezed to one character per line is caught, and a long digest is not."""
    page = tmp_path / "narrow" / "report.html"
    page.parent.mkdir()
    page.write_text(
        '<html><body><p id="headline">h</p><p id="counts">c</p><table style="width:60px">'
        '<tr><td style="overflow-wrap:anywhere">CONTRADICTED</td>'
        f'<td><span class="long" style="overflow-wrap:anywhere">{"f" * 64}</span></td></tr>'
        "</table></body></html>"
    )
    seen = probe(page, tmp_path, 400, 300)
    assert seen["broken"] == ["CONTRADICTED"]
    assert seen["bottoms"]["headline"] < 300


def test_screenshot(report_runs):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    page = report_runs["paper"] / "report.html"
    chromium("--window-size=1280,5200", f"--screenshot={shot}", page.as_uri())
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 5200)
        gray = image.convert("L")
        top = gray.crop((0, 0, 1280, 1600))  # the title, the verdict or the first tables
        dark = sum(top.histogram()[:128]) / (top.width * top.height)
        colours = len(image.convert("RGB").getcolors(maxcolors=1 << 20) or ())
    # A blank or unstyled page fails these: text covers a few percent of the top, and the
    # highlighted rows, notes and figures bring hundreds of colours.
    assert 0.01 < dark < 0.5, f"{dark:.4f} of the top is dark: is there text?"
    assert colours > 200, f"only {colours} colours: are the figures there?"


def test_screenshot_check_fails_on_a_blank_page(tmp_path):
    from PIL import Image

    page = tmp_path / "blank.html"
    page.write_text("<html><body></body></html>")
    shot = tmp_path / "blank.png"
    chromium("--window-size=1280,1600", f"--screenshot={shot}", page.as_uri())
    with Image.open(shot) as image:
        gray = image.convert("L")
        assert sum(gray.histogram()[:128]) == 0 and len(gray.getcolors() or ()) <= 2
