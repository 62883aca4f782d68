"""The docs and the CLI cannot drift apart: every `hpstudy <command>` and `--flag` the README and
the reference name exists in the real parser, and every command and flag of the parser is
documented somewhere.

>>> problems(text, parsers())   # [] when every command and flag named in `text` exists
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from hpstudy import cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REFERENCE = ROOT / "docs" / "reference.md"
CHECKED = (README, REFERENCE)  # the pages that must name only what exists

FENCE = re.compile(r"^```.*?^```", re.M | re.S)
SPAN = re.compile(r"`([^`]+)`")
# `hpstudy run`, `&& hpstudy report`, `OMP_NUM_THREADS=1 hpstudy run`; not `import hpstudy as hs`
COMMAND = re.compile(r"(?:^|(?<=[\s;&|(]))(?<!import )(?<!from )hpstudy\s+([a-z][\w-]*)")
FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*")
SEPARATOR = re.compile(r"&&|\|\||\||;")


def parsers() -> dict[str, argparse.ArgumentParser]:
    """The real parser: "" for `hpstudy` itself, then one entry per subcommand."""
    parser = cli.build_parser()
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **sub.choices}


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def units(text: str) -> list[tuple[str, list[str]]]:
    """(the command a unit is about, its code snippets) per fenced line, table row or paragraph.

    A table row whose first cell names `hpstudy CMD` is about CMD, so its "key flags" cell is
    checked against CMD's parser; elsewhere a flag belongs to the command before it in its
    snippet."""
    found: list[tuple[str, list[str]]] = []
    for block in FENCE.findall(text):
        found += [("", [line]) for line in block.splitlines()[1:-1] if line.strip()]
    prose = FENCE.sub("\n\n", text)
    for paragraph in re.split(r"\n\s*\n", prose):
        rows = paragraph.splitlines() if paragraph.lstrip().startswith("|") else [paragraph]
        for row in rows:
            spans = [" ".join(s.split()).replace("\\|", "/") for s in SPAN.findall(row)]
            about = ""
            if row.lstrip().startswith("|"):
                first = row.strip().strip("|").split("|")[0]
                if match := COMMAND.search(" ".join(SPAN.findall(first))):
                    about = match.group(1)
            found.append((about, spans))
    return found


def problems(text: str, known: dict[str, argparse.ArgumentParser]) -> list[str]:
    """Each command and flag in `text`'s code that the parser does not have, as one line."""
    everywhere = set().union(*(options(p) for p in known.values()))
    top = options(known[""])
    out = []
    for about, snippets in units(text):
        for snippet in snippets:
            for part in SEPARATOR.split(snippet):
                command = about
                # Flags before the first `hpstudy CMD` belong to the unit's command (if any).
                pieces = COMMAND.split(part)  # [before, cmd1, after1, cmd2, after2, ...]
                for i, piece in enumerate(pieces):
                    if i % 2:
                        command = piece
                        if command not in known:
                            out.append(f"`hpstudy {command}` is not a command: {snippet!r}")
                        continue
                    # A flag with no known command before it may be any command's.
                    allowed = options(known[command]) | top if command in known else everywhere
                    if not command:
                        allowed = everywhere
                    out += [f"{flag} is not a flag of `hpstudy {command}`: {snippet!r}"
                            for flag in FLAG.findall(piece) if flag not in allowed]  # fmt: skip
    return out


def undocumented(text: str, known: dict[str, argparse.ArgumentParser]) -> list[str]:
    """Each command and long flag of the parser that `text` never names."""
    snippets = [snippet for _, found in units(text) for snippet in found]
    named_commands = {m.group(1) for snippet in snippets for m in COMMAND.finditer(snippet)}
    named_flags = set(FLAG.findall(text))
    out = [f"`hpstudy {name}` is not documented" for name in known if name and
           name not in named_commands]  # fmt: skip
    for name, parser in known.items():
        flags = {s for s in options(parser) if s.startswith("--") and s != "--help"}
        command = f"hpstudy {name}" if name else "hpstudy"
        out += [f"{flag} of `{command}` is not documented" for flag in sorted(flags - named_flags)]
    return out


@pytest.fixture(scope="module")
def known():
    return parsers()


@pytest.mark.parametrize("page", CHECKED, ids=lambda p: p.name)
def test_every_command_and_flag_the_docs_name_exists(page, known):
    assert problems(page.read_text(encoding="utf-8"), known) == []


def test_every_command_and_flag_is_documented(known):
    text = "\n".join(page.read_text(encoding="utf-8") for page in CHECKED)
    assert undocumented(text, known) == []


def test_the_readme_tours_every_command(known):
    commands_only = {name: argparse.ArgumentParser() for name in known}  # flags: the reference
    assert undocumented(README.read_text(encoding="utf-8"), commands_only) == []


def test_the_check_sees_a_missing_command_and_a_flag_of_another_command(known):
    text = (
        "Run `hpstudy frobnicate` or `hpstudy run paper --no-such-flag`, then\n"
        "`hpstudy status runs/paper --fresh` (a flag of run, not of status).\n\n"
        "| `hpstudy report RUN_DIR` | writes it | `--seeds N` |\n\n"
        "```sh\nhpstudy run digits && hpstudy report runs/digits --json\n```\n"
    )
    found = problems(text, known)
    assert any("`hpstudy frobnicate` is not a command" in p for p in found)
    assert any("--no-such-flag is not a flag of `hpstudy run`" in p for p in found)
    assert any("--fresh is not a flag of `hpstudy status`" in p for p in found)
    assert any("--seeds is not a flag of `hpstudy report`" in p for p in found)
    assert any("--json is not a flag of `hpstudy report`" in p for p in found)
    assert len(found) == 5, found


def test_the_check_accepts_what_exists_and_ignores_python(known):
    text = (
        "`import hpstudy as hs` and `from hpstudy import engine`; `hpstudy run replicate\n"
        "--with-clean`; `OMP_NUM_THREADS=1 hpstudy run wide --threads 1`; `--debug`.\n\n"
        "| `hpstudy bench` | times | `--family mlp\\|cnn`, `--steps N` |\n"
    )
    assert problems(text, known) == []


def test_the_reverse_check_sees_an_undocumented_flag(known):
    found = undocumented("`hpstudy run --seeds 3`", known)
    assert "`hpstudy status` is not documented" in found
    assert "--fresh of `hpstudy run` is not documented" in found
    assert not any(p.startswith("--seeds of `hpstudy run`") for p in found)


DESIGN = ROOT / "docs" / "design.md"
PACKAGE_ROW = re.compile(r"^\| `(\w+)/` \| ([^|]*) \|", re.M)


def design_packages(text: str) -> dict[str, set[str]]:
    """design.md's Packages table: package -> the module files its row lists."""
    return {name: set(re.findall(r"`(\w+\.py)`", modules))
            for name, modules in PACKAGE_ROW.findall(text)}  # fmt: skip


def test_the_design_lists_every_module_of_every_package():
    src = ROOT / "src" / "hpstudy"
    packages = sorted(p.parent.name for p in src.glob("*/__init__.py"))
    listed = design_packages(DESIGN.read_text(encoding="utf-8"))
    assert sorted(listed) == packages, "design.md's Packages table: one row per package"
    for name in packages:
        found = {p.name for p in (src / name).glob("*.py")} - {"__init__.py"}
        assert listed[name] - {"__init__.py"} == found, (
            f"design.md lists {sorted(listed[name] - found)} in {name}/ that do not exist, and "
            f"not {sorted(found - listed[name])} that do"
        )


def test_the_design_check_sees_a_module_left_out():
    text = "| `stats/` | `tables.py`, `verdict.py` | ... |\n"
    assert design_packages(text) == {"stats": {"tables.py", "verdict.py"}}
