"""The house rules, checked by reading the source: one door to Optuna, layers that point one way.

These scan `src/hpstudy` with `ast`, so they fail the moment a module reaches around a door.
"""

from __future__ import annotations

import ast
import subprocess
import sys
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


def _runtime_nodes(tree: ast.AST):
    """Every node of `tree` except those under `if TYPE_CHECKING:` (never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
    return (n for n in ast.walk(tree) if id(n) not in skipped)


def module_imports(name: str, tree: ast.AST) -> set[str]:
    """The hpstudy modules that `name` makes Python load, function-level imports included.

    `from pkg import sub` loads `pkg.sub` when `sub` is a module and `pkg` otherwise; importing
    `a.b.c` also runs the packages `a.b` above it, except those `name` itself lives in (they are
    running already when it loads).
    """
    loaded = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            targets = {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            subs = {f"{node.module}.{alias.name}" for alias in node.names}
            targets = {m for m in subs if m in MODULES}
            lazy = LAZY.get(node.module, {})  # a package's names loaded on first use
            targets |= {lazy[alias.name] for alias in node.names if alias.name in lazy}
            if targets != subs:
                targets.add(node.module)
        else:
            continue
        for target in targets:
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                module = ".".join(parts[:i])
                if module in MODULES and not name.startswith(module + "."):
                    loaded.add(module)
    return loaded - {name}


MODULES = modules()


def lazy_names(tree: ast.Module) -> dict[str, str]:
    """A package's `_LAZY` table (name -> the module that defines it, loaded on first use): an
    import of such a name is an import of that module."""
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in targets):
            return ast.literal_eval(node.value)
    return {}


LAZY = {name: lazy_names(tree) for name, tree in MODULES.items()}
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
                m
                for m in imports(tree)
                if m.startswith(("hpstudy.runner.execute", "hpstudy.commands"))
            }
            assert not found, (
                f"{name} imports {sorted(found)}: use hpstudy.storage.rundir / studydata"
            )


def test_commands_do_not_import_each_other():
    shared = {"hpstudy.commands.data", "hpstudy.commands.study_args", "hpstudy.commands.progress"}
    for name, tree in MODULES.items():
        if name.startswith("hpstudy.commands."):
            found = {m for m in imports(tree) if m.startswith("hpstudy.commands.")}
            others = {m for m in found if m in MODULES and m not in shared}
            assert not others, f"{name} imports {sorted(others)}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in `graph` (module -> modules it loads), or None."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name, [name])):
            return cycle
    return None


def test_no_import_cycles_counting_function_level_imports():
    graph = {name: module_imports(name, tree) & set(MODULES) for name, tree in MODULES.items()}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_cycle_check_sees_a_cycle_hidden_in_a_function():
    a = ast.parse("def f():\n    from hpstudy.data import catalog\n")
    graph = {"hpstudy.data.idx": module_imports("hpstudy.data.idx", a) & set(MODULES),
             "hpstudy.data.catalog": {"hpstudy.data.idx"}}  # fmt: skip
    assert find_cycle(graph) == ["hpstudy.data.catalog", "hpstudy.data.idx", "hpstudy.data.catalog"]


def test_the_top_level_holds_a_handful_of_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, f"src/hpstudy/ holds {len(top)} modules ({top}): give them a package"


# The layers, bottom up: a module may import its own package and the packages ranked below it.
LAYERS = {
    "hpstudy.errors": 0, "hpstudy.atomic": 0, "hpstudy.usertext": 0, "hpstudy.lazy": 0,
    "hpstudy.config": 1,
    "hpstudy.engine": 2,
    "hpstudy.data": 3, "hpstudy.stats": 3, "hpstudy.storage": 4, "hpstudy.tabulate": 5,
    "hpstudy.protocols": 6, "hpstudy.predict": 6, "hpstudy.runner": 7, "hpstudy.report": 8,
    "hpstudy.commands": 9, "hpstudy.cli": 10, "hpstudy.api": 10, "hpstudy": 10,
}  # fmt: skip
# Packages that read results and never train: neither the engine, nor the protocols (which
# reach the trainer), nor torch.
READERS = ("hpstudy.stats", "hpstudy.tabulate", "hpstudy.report")


def layer_of(module: str) -> str:
    parts = module.split(".")
    return next(".".join(parts[:i]) for i in range(len(parts), 0, -1)
                if ".".join(parts[:i]) in LAYERS)  # fmt: skip


def upward_edges() -> set[tuple[str, str]]:
    found = set()
    for name, tree in MODULES.items():
        if name == "hpstudy":
            continue
        for target in module_imports(name, tree) & set(MODULES):
            if target == "hpstudy" or layer_of(target) == layer_of(name):
                continue
            if LAYERS[layer_of(target)] >= LAYERS[layer_of(name)]:
                found.add((name, target))
    return found


def test_layers_point_down():
    new = sorted(upward_edges())
    assert not new, "imports that point up a layer: " + ", ".join(f"{a} -> {b}" for a, b in new)


def test_config_and_the_readers_keep_their_rules():
    """config imports nothing above it; stats, tabulate and report import neither the engine, nor
    the protocols, nor torch."""
    for name, tree in MODULES.items():
        loaded = module_imports(name, tree)
        third = {m.split(".")[0] for m in imports(tree)}
        if name.startswith("hpstudy.config"):
            above = {m for m in loaded if not m.startswith(("hpstudy.config", "hpstudy.errors"))}
            assert not above, f"{name} imports {sorted(above)}: config is the bottom layer"
        if name.startswith(READERS):
            engine = {m for m in loaded if m.startswith(("hpstudy.engine", "hpstudy.protocols"))}
            assert not engine and "torch" not in third, (
                f"{name} imports {sorted(engine | (third & {'torch'}))}: statistics, tables and "
                "the report read results; they never train"
            )


def test_tabulating_a_run_loads_neither_torch_nor_the_trainer():
    code = ("import sys; import hpstudy.tabulate, hpstudy.report.loader; "
            "print(sorted(m for m in ('torch', 'hpstudy.protocols', 'hpstudy.engine.training') "
            "if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_package_has_a_layer():
    unplaced = sorted(n for n in MODULES if n != "hpstudy" and layer_of(n) == "hpstudy")
    assert not unplaced, f"{unplaced}: give each a rank in LAYERS"


def test_a_name_loaded_on_first_use_counts_as_its_module():
    tree = ast.parse("from hpstudy.storage import Store, GRACE_S\n")
    loaded = module_imports("hpstudy.protocols.grid", tree)
    assert {"hpstudy.storage.store", "hpstudy.storage"} <= loaded


def test_run_options_load_neither_optuna_nor_torch():
    code = ("import sys; from hpstudy.runner.options import RunOptions; RunOptions(); "
            "print(sorted(m for m in ('optuna', 'torch') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("script", sorted((PACKAGE.parents[1] / "benchmarks").glob("*.py")),
                         ids=lambda p: p.name)  # fmt: skip
def test_every_hpstudy_name_a_benchmark_imports_exists(script):
    """Benchmarks run on the GPU machine only: a moved name must fail here, not there."""
    import importlib

    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hpstudy"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                submodule = hasattr(module, "__path__") and importlib.util.find_spec(
                    f"{node.module}.{alias.name}"
                )
                assert hasattr(module, alias.name) or submodule, (
                    f"{script.name}: from {node.module} import {alias.name}: no such name"
                )
