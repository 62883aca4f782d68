"""The report as a list of blocks, rendered as self-contained HTML or as Markdown.

    >>> blocks = [Heading(1, "Report"), Text("Selection on `test`."), table, Figure(png, "Fig.")]
    >>> html = to_html(blocks, title="hpstudy report: paper")    # PNGs embedded as base64
    >>> md = to_markdown(blocks, relative_to=run_dir)             # PNGs linked beside the file
    >>> write_text_atomic(run_dir / "report.html", html)

The HTML needs nothing outside itself (no scripts, fonts or stylesheets from anywhere), so it opens
offline and can be mailed as one file; its width follows the window, so it reads on a laptop.
Text is plain: `backticks` become code, everything else is escaped.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hpstudy.atomic import atomic_file
from hpstudy.report.report_tables import Table


@dataclass(frozen=True)
class Heading:
    level: int  # 1..3
    text: str
    key: str = ""  # anchor; derived from the text when empty


@dataclass(frozen=True)
class Text:
    text: str
    kind: str = "p"  # "p", "note", "warning" (highlighted boxes) or "headline" (the answer)
    key: str = ""  # HTML id, when a test or a link needs to find the paragraph


@dataclass(frozen=True)
class Figure:
    path: Path  # a PNG file
    caption: str
    key: str = ""


@dataclass(frozen=True)
class Code:
    text: str  # shown verbatim
    summary: str = ""  # when set, folded under this line (HTML <details>)


Block = Heading | Text | Table | Figure | Code

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       margin: 0; background: #fafafa; }
main { max-width: 1180px; margin: 0 auto; padding: 1.5rem 1.25rem 4rem; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .5rem; line-height: 1.25; }
h2 { border-bottom: 1px solid #ddd; padding-top: .6rem; }
nav ol { columns: 2; font-size: .92rem; }
.table-wrap { overflow-x: auto; margin: .6rem 0; }
table { border-collapse: collapse; font-size: .88rem; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { border: 1px solid #d0d0d0; padding: .25rem .55rem; text-align: left; vertical-align: top;
         overflow-wrap: normal; word-break: normal; hyphens: none; }
th { background: #f0f2f5; } tr.marked td { background: #fff6d6; font-weight: 600; }
td .long, td code { overflow-wrap: anywhere; } td .w, th .w { white-space: nowrap; }
p.table-note { font-size: .83rem; color: #555; margin: .15rem 0; max-width: 70rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #444; }
.headline { font-size: 1.08rem; font-weight: 600; margin: .4rem 0; }
.counts { margin: .3rem 0 .6rem; }
.warning { background: #fff1f0; border-left: 4px solid #d4380d; padding: .5rem .8rem; }
.note { background: #f0f5ff; border-left: 4px solid #2f54eb; padding: .5rem .8rem; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: .8rem; }
code { background: #f2f2f2; padding: 0 .2rem; border-radius: 3px; overflow-wrap: anywhere; }
p, figcaption { overflow-wrap: break-word; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; }
.table-wrap { scrollbar-width: thin; scrollbar-color: #999 #eee; }
@media (max-width: 640px) {
  main { padding: .8rem .6rem 3rem; } nav ol { columns: 1; } h1 { font-size: 1.2rem; }
  .headline { font-size: 1rem; }
  /* Tables become stacked rows: one block per row, each cell led by its column's name. */
  table, caption, tbody, tr, td { display: block; width: auto; }
  thead { display: none; }
  tr { border: 1px solid #d0d0d0; margin: 0 0 .5rem; }
  td { border: 0; border-bottom: 1px solid #eee; padding: .2rem .5rem; }
  td:empty { display: none; }
  td[data-label]:not([data-label=""])::before { content: attr(data-label) ": "; color: #555;
                                               font-weight: 600; }
}
"""


def anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _attr(text: str) -> str:
    """A value for inside a double-quoted attribute: every user string may hold quotes."""
    return html.escape(text, quote=True)


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>, [text](href) into links and *emphasis* into
    <em> (no literal Markdown reaches the page)."""
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
    # Links to files beside the report only: a plain relative name, never a scheme.
    escaped = re.sub(r"\[([^\]]+)\]\(([\w.-]+(?:/[\w.-]+)*)\)", r'<a href="\2">\1</a>', escaped)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<em>\1</em>", escaped)


LONG_TOKEN = 28  # characters: longer tokens without spaces are hashes, paths or commands


def _cell(text: str) -> str:
    """A table cell's text, escaped. Every real word stays whole: a browser may break a line
    after a hyphen or a dash ("runner-up", "--threads", "85.1–86.4"), so such words are held
    together; a token too long to be a word (a digest, a path) may break anywhere."""
    words = []
    for word in text.split(" "):
        escaped = html.escape(word)
        if len(word) > LONG_TOKEN:
            escaped = f'<span class="long">{escaped}</span>'
        elif _BREAKS.search(word):
            escaped = f'<span class="w">{escaped}</span>'
        words.append(escaped)
    return " ".join(words)


_BREAKS = re.compile(r"[-‐–—/]")  # characters after which a browser may wrap a line


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_cell(c)}</th>" for c in table.columns)
    labels = [_attr(c) for c in table.columns]  # the stacked rows of a narrow screen show them
    body = []
    for i, row in enumerate(table.rows):
        cls = ' class="marked"' if i in table.marked else ""
        cells = "".join(f'<td data-label="{label}">{_cell(c)}</td>'
                        for label, c in zip(labels, row, strict=False))  # fmt: skip
        body.append(f"<tr{cls}>{cells}</tr>")
    notes = "".join(f'<p class="table-note">{_inline(n)}</p>' for n in table.notes)
    return (
        f'<div class="table-wrap"><table id="{_attr(table.key)}" data-table="{_attr(table.key)}">'
        f"<caption>{html.escape(table.title)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>{notes}"
    )


def _html_figure(figure: Figure) -> str:
    """The PNG embedded at half its pixel width (figures are drawn at 2x for sharp text), inside
    a link to the file beside the report, so a click opens it full size (phones too)."""
    from PIL import Image

    path = Path(figure.path)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    with Image.open(path) as image:
        width = image.width // 2
    key = html.escape(figure.key or path.stem, quote=True)
    alt = html.escape(figure.caption, quote=True)
    href = html.escape(f"{path.parent.name}/{path.name}", quote=True)
    return (
        f'<figure id="fig-{key}"><a href="{href}" title="open full size">'
        f'<img src="data:image/png;base64,{data}" width="{width}" alt="{alt}"></a>'
        f"<figcaption>{_inline(figure.caption)}</figcaption></figure>"
    )


def to_html(blocks: list[Block], *, title: str) -> str:
    """One self-contained HTML page; level-2 headings make the table of contents."""
    parts, toc = [], []
    for block in blocks:
        if isinstance(block, Heading):
            key = _attr(block.key or anchor(block.text))
            if block.level == 2:
                toc.append(f'<li><a href="#{key}">{html.escape(block.text)}</a></li>')
            parts.append(f'<h{block.level} id="{key}">{_inline(block.text)}</h{block.level}>')
        elif isinstance(block, Text):
            cls = "" if block.kind == "p" else f' class="{_attr(block.kind)}"'
            key = f' id="{_attr(block.key)}"' if block.key else ""
            parts.append(f"<p{key}{cls}>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            parts.append(_html_table(block))
        elif isinstance(block, Figure):
            parts.append(_html_figure(block))
        elif isinstance(block, Code):
            pre = f"<pre>{html.escape(block.text)}</pre>"
            if block.summary:
                pre = f"<details><summary>{_inline(block.summary)}</summary>{pre}</details>"
            parts.append(pre)
    nav = f"<nav><strong>Contents</strong><ol>{''.join(toc)}</ol></nav>" if toc else ""
    # The contents go after the title and its opening paragraphs, before the first section.
    first_h2 = next((i for i, b in enumerate(blocks) if isinstance(b, Heading) and b.level == 2),
                    len(parts))  # fmt: skip
    parts.insert(first_h2, nav)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{chr(10).join(parts)}\n</main>\n</body>\n</html>\n"
    )


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    lines = [f"**{table.title}**", ""]
    lines.append("| " + " | ".join(_md_cell(c) or " " for c in table.columns) + " |")
    lines.append("|" + "|".join(" --- " for _ in table.columns) + "|")
    for i, row in enumerate(table.rows):
        cells = [_md_cell(c) for c in row]
        if i in table.marked:  # bold marks what HTML highlights
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""] + [f"*{n}*  " for n in table.notes]
    return "\n".join(lines).rstrip()


def to_markdown(blocks: list[Block], *, relative_to: Path) -> str:
    """Markdown with each figure linked relative to `relative_to` (the report's folder)."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Text):
            prefix = {"warning": "> **Warning:** ", "note": "> ", "headline": "**"}.get(
                block.kind, ""
            )
            suffix = "**" if block.kind == "headline" else ""
            parts.append(prefix + block.text + suffix)
        elif isinstance(block, Table):
            parts.append(_md_table(block))
        elif isinstance(block, Figure):
            rel = os.path.relpath(Path(block.path), relative_to)
            parts.append(f"![{block.caption}]({Path(rel).as_posix()})\n\n*{block.caption}*")
        elif isinstance(block, Code):
            fence = f"```\n{block.text}\n```"
            parts.append(f"{block.summary}\n\n{fence}" if block.summary else fence)
    return "\n\n".join(parts) + "\n"


def write_text_atomic(path: Path, text: str) -> Path:
    """Write to a temporary file in the same folder, then rename over `path`."""
    with atomic_file(path, "w") as f:
        f.write(text)
    return Path(path)
