"""The shape of the code, checked over ``ablate/`` and ``variants/``: sizes, import cycles,
one MLflow writer, variant strings parsed once.

Each check reads the source with :mod:`ast` (nothing is imported), lists every offender
with its file and line, and has a self-test that plants a violation, so it cannot pass
vacuously:

- no module over :data:`MAX_MODULE_LINES` lines, no function over
  :data:`MAX_FUNCTION_LINES` (declaration tables aside, each named with why);
- no import cycle, counting imports at any depth (inside functions too; ``if
  TYPE_CHECKING:`` aside) and the package ``__init__`` every import runs: importing
  ``ablate.study.worker`` from ``ablate.ui`` runs ``ablate/study/__init__.py`` first;
- no call of an MLflow write API (client or fluent: ``log_*``, ``set_tag``, ``create_run``,
  ``log_model``, ... every name MLflow defines) outside ``ablate/tracking/``;
- no variant string parsed outside ``ablate/trial/run.py`` and ``variants/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ablate", "variants")

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80

# "path:qualified name" -> why it may be long. Only declaration tables belong here.
LONG_FUNCTIONS_ALLOWED: dict[str, str] = {}

TRACKING = "ablate/tracking/"
VARIANT_PARSING_ALLOWED = ("ablate/trial/run.py", "variants/")


def _modules(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages (``__init__`` = the
    package itself)."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _rel(path: Path, root: Path = ROOT) -> str:
    return path.relative_to(root).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# ------------------------------------------------------------------------------ sizes


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


def _oversized(modules: dict[str, Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in modules.values():
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES:
            found.append(f"{_rel(path, root)} ({n} lines)")
        for name, node in _functions(_tree(path)):
            key = f"{_rel(path, root)}:{name}"
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS_ALLOWED:
                found.append(f"{key} ({n} lines)")
    return found


def test_no_module_or_function_over_the_line_limits():
    found = _oversized(MODULES)
    assert not found, (
        f"over {MAX_MODULE_LINES} lines per module or {MAX_FUNCTION_LINES} per function "
        f"(group by what changes together; a declaration table may be allow-listed): {found}"
    )


def test_the_allow_list_names_existing_long_functions():
    """An entry whose function was shortened or removed must leave the list."""
    lengths = {
        f"{_rel(path)}:{name}": node.end_lineno - node.lineno + 1
        for path in MODULES.values()
        for name, node in _functions(_tree(path))
    }
    stale = [k for k in LONG_FUNCTIONS_ALLOWED if lengths.get(k, 0) <= MAX_FUNCTION_LINES]
    assert not stale, f"LONG_FUNCTIONS_ALLOWED entries that are not long (any more): {stale}"


def test_the_size_check_finds_a_long_module_and_function(tmp_path):
    (tmp_path / "ablate").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    (tmp_path / "ablate" / "big.py").write_text(
        f"def f():\n{body}\n" + "\n" * MAX_MODULE_LINES
    )
    found = _oversized(_modules(tmp_path, ("ablate",)), root=tmp_path)
    assert [f.split(" ")[0] for f in found] == ["ablate/big.py", "ablate/big.py:f"]


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


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The module ``name`` refers to: itself, or the nearest enclosing module."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _import_edges(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules that importing ``module`` runs: each imported module, and each package
    ``__init__`` on the way to it that is not already running (an ancestor of ``module``,
    or a top-level package, which is always imported first)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    running = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
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
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for name in names:
            target = _target(name, modules)
            if target is None:
                continue
            parts = target.split(".")
            packages = {".".join(parts[:i]) for i in range(2, len(parts))}
            for hit in {target} | (packages - running):
                if hit != module and hit in modules:
                    edges.add(hit)
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
    path, seen = [component[0]], {component[0]}
    while True:
        nxt = next(n for n in sorted(graph[path[-1]]) if n in members)
        if nxt in seen:
            return " -> ".join(path[path.index(nxt) :] + [nxt])
        path.append(nxt)
        seen.add(nxt)


def _import_cycles(modules: dict[str, Path]) -> list[str]:
    graph = {module: _import_edges(module, path, modules) for module, path in modules.items()}
    return [_cycle_path(graph, c) for c in _cycles(graph)]


def test_no_import_cycles():
    cycles = _import_cycles(MODULES)
    assert not cycles, "import cycles (function-level imports and package __init__s count): " + (
        "; ".join(cycles)
    )


def test_the_cycle_check_sees_function_level_imports_and_package_inits(tmp_path):
    root = tmp_path / "ablate"
    (root / "study").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import ablate.ui\n"
    )
    # a real runtime cycle: ui imports a submodule, which runs the package __init__ first,
    # and that imports ui back (inside a function: it still runs when called)
    (root / "study" / "__init__.py").write_text("def f():\n    from ablate import ui\n")
    (root / "study" / "worker.py").write_text("from ablate.study import helpers\n")
    (root / "study" / "helpers.py").write_text("")
    (root / "ui.py").write_text("import ablate.typed\nfrom ablate.study.worker import x\n")
    modules = _modules(tmp_path, ("ablate",))
    assert _import_cycles(modules) == ["ablate.study -> ablate.ui -> ablate.study"]
    # a submodule importing its sibling does not re-run its own package's __init__
    assert _import_edges("ablate.study.worker", modules["ablate.study.worker"], modules) == {
        "ablate.study.helpers"
    }


# ----------------------------------------------------------------------- one writer


def _mlflow_write_names() -> frozenset[str]:
    """Every name of MLflow's client and fluent API that writes: runs, params, metrics,
    tags, artifacts, inputs / outputs, logged and registered models, experiments."""
    mlflow = pytest.importorskip("mlflow")
    prefixes = ("log_", "set_", "create_", "delete_", "update_", "rename_", "finalize_",
                "register_", "restore_", "transition_", "copy_", "start_", "end_")
    names = {n for n in dir(mlflow.MlflowClient) if n.startswith(prefixes)}
    names |= {n for n in dir(mlflow) if n.startswith(prefixes) and callable(getattr(mlflow, n))}
    return frozenset(names | {"log_model", "save_model", "autolog"})


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


def _mlflow_writes(path: Path, names: frozenset[str], root: Path = ROOT) -> list[str]:
    return [
        f"{_rel(path, root)}:{node.lineno} {_called_name(node)}"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Call) and _called_name(node) in names
    ]


def _defined_outside_tracking(modules: dict[str, Path]) -> set[str]:
    """Functions ablate defines outside the tracking package: calls of them are ours even
    where MLflow has the same name (``ablate.models.register_model``)."""
    return {
        name.rpartition(".")[2]
        for path in modules.values()
        if not _rel(path).startswith(TRACKING)
        for name, _ in _functions(_tree(path))
    }


def test_mlflow_is_written_only_by_the_tracking_package():
    names = _mlflow_write_names() - _defined_outside_tracking(MODULES)
    outside = [
        hit
        for path in MODULES.values()
        if not _rel(path).startswith(TRACKING)
        for hit in _mlflow_writes(path, names)
    ]
    assert not outside, (
        "MLflow writes outside ablate/tracking/ (add a method with a domain name to the "
        "recorder or the Tracker instead): " + ", ".join(outside)
    )


def test_the_writer_check_finds_client_fluent_and_model_writes(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import mlflow\n"
        "def f(client, tracker, run_id, t, m):\n"
        "    client.set_terminated(run_id, status='FAILED')\n"
        "    client.log_batch(run_id, tags=t)\n"
        "    tracker.describe_study(t, None)\n"
        "    mlflow.log_metric('x', 1.0)\n"
        "    mlflow.pytorch.log_model(m, name='m')\n"
        "    client.log_artifact(run_id, 'f')\n"
        "    client.get_run(run_id)\n"
    )
    hits = [h.split(":")[1] for h in _mlflow_writes(probe, _mlflow_write_names(), tmp_path)]
    assert hits == ["3 set_terminated", "4 log_batch", "6 log_metric", "7 log_model",
                    "8 log_artifact"]


# ---------------------------------------------------------------------- resolve once


def _variant_parses(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for node in ast.walk(_tree(path)):
        if not isinstance(node, ast.Call):
            continue
        name = _called_name(node)
        owner = getattr(node.func, "value", None)
        spec_parse = name == "parse" and (
            getattr(owner, "id", None) or getattr(owner, "attr", None)
        ) == "VariantSpec"
        if name == "parse_variant" or spec_parse:
            found.append(f"{_rel(path, root)}:{node.lineno}")
    return found


def test_variant_strings_are_parsed_only_in_resolve_and_the_registry():
    outside = [
        hit
        for path in MODULES.values()
        if not _rel(path).startswith(VARIANT_PARSING_ALLOWED)
        for hit in _variant_parses(path)
    ]
    assert not outside, (
        "variant strings parsed outside ablate/trial/run.py and variants/ (pass the "
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
    "module", ["ablate.tracking.recorder", "ablate.trial.run", "variants", "ablate.study"]
)
def test_the_checked_modules_exist(module):
    """The checks above would pass vacuously if the packages moved."""
    assert module in MODULES
