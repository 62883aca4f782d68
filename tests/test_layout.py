"""The house rules, checked by reading the source: one door to Optuna, layers that point one way.

These scan `src/hpstudy` with `ast`, so they fail the moment a module reaches around a door.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hpstudy"
PRIVATE_OPTUNA = {"_trial_id", "_study_id", "_rdb", "_optuna", "_get_stale_trial_ids",
                  "_create_scoped_session", "_storage"}  # fmt: skip


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("hpstudy", *path.relative_to(PACKAGE).with_suffix("").parts))
        found[name.removesuffix(".__init__")] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def imports(tree: ast.AST, *, top_level_only: bool = False) -> set[str]:
    """Modules a tree imports (`from a.b import c` counts as a.b and a.b.c)."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


MODULES = modules()
OUTSIDE_STORAGE = {n: t for n, t in MODULES.items() if not n.startswith("hpstudy.storage")}


@pytest.mark.parametrize("name", sorted(OUTSIDE_STORAGE))
def test_only_the_storage_package_speaks_to_optuna(name):
    tree = OUTSIDE_STORAGE[name]
    optuna = sorted(m for m in imports(tree) if m == "optuna" or m.startswith("optuna."))
    assert not optuna, f"{name} imports {optuna}: ask hpstudy.storage for the operation instead"
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    private = sorted(attributes & PRIVATE_OPTUNA)
    assert not private, f"{name} touches {private}: add the operation to hpstudy.storage"


def test_the_scan_sees_a_module_that_reaches_around_the_door():
    tree = ast.parse("import optuna\nstore._rdb.get_trial(1)\n")
    assert "optuna" in imports(tree)
    assert any(isinstance(n, ast.Attribute) and n.attr == "_rdb" for n in ast.walk(tree))


def test_the_report_reads_runs_without_the_orchestrator():
    for name, tree in MODULES.items():
        if name.startswith("hpstudy.report"):
            found = {
                m for m in imports(tree) if m.startswith(("hpstudy.runner", "hpstudy.commands"))
            }
            assert not found, f"{name} imports {sorted(found)}: use hpstudy.rundir / studydata"


def test_commands_do_not_import_each_other():
    shared = {"hpstudy.commands.data", "hpstudy.commands.study_args", "hpstudy.commands.progress"}
    for name, tree in MODULES.items():
        if name.startswith("hpstudy.commands."):
            found = {m for m in imports(tree) if m.startswith("hpstudy.commands.")}
            others = {m for m in found if m in MODULES and m not in shared}
            assert not others, f"{name} imports {sorted(others)}"


def test_no_import_cycles_at_module_level():
    graph = {
        name: {m for m in imports(tree, top_level_only=True) if m in MODULES and m != name}
        for name, tree in MODULES.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
