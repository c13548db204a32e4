"""The shape of the package, checked: sizes, import cycles, one MLflow writer, resolve once.

Each test reads the source with :mod:`ast` (nothing is imported) and fails with every
offender listed, so a regression names the file and line to look at:

- no module of ``ablate/`` over :data:`MAX_MODULE_LINES` lines;
- no function or method over :data:`MAX_FUNCTION_LINES` lines, except the declaration
  tables in :data:`LONG_FUNCTIONS_ALLOWED` (argparse set-ups and the like, each with why);
- no import cycle among ablate modules, counting imports at any depth (inside functions
  too), ``if TYPE_CHECKING:`` blocks aside;
- no MLflow run written (created, tagged, ended, status changed, deleted) outside
  ``ablate/tracking/``;
- no variant string parsed outside ``ablate/resolve.py`` and the ``variants`` registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ablate"

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80

# "path:qualified name" -> why it may be long. Only declaration tables belong here.
LONG_FUNCTIONS_ALLOWED: dict[str, str] = {
    "ablate/compare/cli.py:add_arguments": "argparse declaration table of `ablate compare`",
}

# Client / fluent calls that create, tag, end, delete or change the status of a run.
RUN_WRITES = frozenset(
    {
        "create_run",
        "set_terminated",
        "update_run",
        "set_tag",
        "delete_tag",
        "delete_run",
        "restore_run",
        "start_run",
        "end_run",
    }
)
TRACKING = "ablate/tracking"
VARIANT_PARSERS = frozenset({"parse_variant"})  # plus VariantSpec.parse, below
VARIANT_PARSING_ALLOWED = ("ablate/trial/resolve.py",)


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# ------------------------------------------------------------------------------ sizes


def test_no_module_over_the_line_limit():
    long = {
        _rel(path): n
        for path in MODULES.values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them along a seam): {long}"


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function and method, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from _functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        else:
            yield from _functions(node, prefix)


def _function_lengths() -> dict[str, int]:
    out = {}
    for path in MODULES.values():
        for name, node in _functions(_tree(path)):
            out[f"{_rel(path)}:{name}"] = node.end_lineno - node.lineno + 1
    return out


def test_no_function_over_the_line_limit():
    lengths = _function_lengths()
    long = {
        key: n
        for key, n in lengths.items()
        if n > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS_ALLOWED
    }
    assert not long, (
        f"functions over {MAX_FUNCTION_LINES} lines (split them, or add a declaration table "
        f"to LONG_FUNCTIONS_ALLOWED with the reason): {dict(sorted(long.items()))}"
    )


def test_the_allow_list_names_existing_long_functions():
    """An entry whose function was shortened or removed must leave the list."""
    lengths = _function_lengths()
    stale = [
        key for key in LONG_FUNCTIONS_ALLOWED if lengths.get(key, 0) <= MAX_FUNCTION_LINES
    ]
    assert not stale, f"LONG_FUNCTIONS_ALLOWED entries that are not long (any more): {stale}"


# ---------------------------------------------------------------------------- imports


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every Import / ImportFrom at any depth, skipping ``if TYPE_CHECKING:`` bodies."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from _imports_in(child)
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    yield from _imports(node)


def _target(name: str) -> str | None:
    """The ablate module ``name`` refers to: itself, or the nearest enclosing module."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _import_edges(module: str, path: Path) -> set[str]:
    """Ablate modules ``module`` imports. ``from pkg import sub`` counts as ``pkg.sub`` when
    ``sub`` is a module; the parent packages a dotted import runs are not counted (every
    package re-exporting its submodules would otherwise be a cycle)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges = set()
    for node in _imports(_tree(path)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        for name in names:
            target = _target(name)
            if target is not None and target != module:
                edges.add(target)
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _cycle_path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One concrete loop through ``component``, e.g. ``a -> b -> a``, for the message."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        nxt = next(n for n in sorted(graph[path[-1]]) if n in members)
        if nxt in seen:
            return " -> ".join(path[path.index(nxt) :] + [nxt])
        path.append(nxt)
        seen.add(nxt)


def test_no_import_cycles():
    graph = {module: _import_edges(module, path) for module, path in MODULES.items()}
    cycles = [
        f"{_cycle_path(graph, c)} (all of {', '.join(c)})" if len(c) > 2 else _cycle_path(graph, c)
        for c in _cycles(graph)
    ]
    assert not cycles, "import cycles (function-level imports count): " + "; ".join(cycles)


def test_cycle_finder_sees_function_level_imports():
    """The import scan itself: a function-level import is an edge, TYPE_CHECKING is not."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import ablate.config\n"
        "def f():\n    from ablate import trial\n    import ablate.tracking.store\n"
    )
    tree = ast.parse(source)
    names = {
        alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
        for node in _imports(tree)
        for alias in node.names
    }
    assert names == {"typing.TYPE_CHECKING", "ablate.trial", "ablate.tracking.store"}
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# ----------------------------------------------------------------------- one writer


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


def _run_writes(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for call in _calls(_tree(path)):
        name = _called_name(call)
        writes_tags = name == "log_batch" and any(k.arg == "tags" for k in call.keywords)
        if name in RUN_WRITES or writes_tags:
            found.append(f"{path.relative_to(root).as_posix()}:{call.lineno} {name}")
    return found


def test_mlflow_runs_are_written_only_by_tracking():
    outside = [
        hit
        for path in MODULES.values()
        if not _rel(path).startswith(TRACKING)
        for hit in _run_writes(path)
    ]
    assert not outside, (
        "MLflow run writes outside ablate/tracking/ (add a Tracker method instead): "
        + ", ".join(outside)
    )


def test_the_writer_check_finds_raw_client_writes(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f(client, tracker, run_id, t):\n"
        "    client.set_terminated(run_id, status='FAILED')\n"
        "    client.log_batch(run_id, tags=t)\n"
        "    client.log_batch(run_id, metrics=t)\n"
        "    tracker.set_tags(t)\n"
        "    import mlflow; mlflow.start_run()\n"
    )
    hits = [hit.rpartition(":")[2] for hit in _run_writes(probe, root=tmp_path)]
    assert hits == ["2 set_terminated", "3 log_batch", "6 start_run"]


# ---------------------------------------------------------------------- resolve once


def _variant_parses(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for call in _calls(_tree(path)):
        name = _called_name(call)
        spec_parse = (
            name == "parse"
            and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, (ast.Name, ast.Attribute))
            and (getattr(call.func.value, "id", None) or call.func.value.attr) == "VariantSpec"
        )
        if name in VARIANT_PARSERS or spec_parse:
            found.append(f"{path.relative_to(root).as_posix()}:{call.lineno}")
    return found


def test_variant_strings_are_parsed_only_in_resolve_and_the_registry():
    outside = [
        hit
        for path in MODULES.values()
        if _rel(path) not in VARIANT_PARSING_ALLOWED
        for hit in _variant_parses(path)
    ]
    assert not outside, (
        "variant strings parsed outside ablate/resolve.py and variants/ (pass the "
        "resolved VariantSpec instead): " + ", ".join(outside)
    )


def test_the_variant_check_finds_parses(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import variants\n"
        "variants.parse_variant('softmax_v:alpha=0')\n"
        "variants.VariantSpec.parse('softmax')\n"
        "schedule.parse('linear')\n"
        "VariantSpec.parse('softmax')\n"
    )
    assert [h.rpartition(":")[2] for h in _variant_parses(probe, root=tmp_path)] == ["2", "3", "5"]


@pytest.mark.parametrize(
    "module", ["ablate.tracking", "ablate.tracking.checkpoints", "ablate.finetune"]
)
def test_the_checked_modules_exist(module):
    """The checks above would pass vacuously if the package moved."""
    assert module in MODULES
