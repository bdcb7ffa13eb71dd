"""The package's layering, checked on the source (AST), as ARCHITECTURE.md states it:

- only the Ray adapters import Ray (the runner, Ray Data loading, the Ray Train wiring); the stages (plan,
  generate, filter, write, load) and everything else never do, not even inside a function;
- nothing under dermgen/ imports the command line (`dermgen.cli`, and its `commands` and `console`) but the
  command line itself and `python -m dermgen` (`__main__`);
- no import cycles among dermgen's modules (module-level imports; an import inside a function runs later).

The checks run on the real package, and on small packages made here to show that each rule catches its
violation.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RAY_ADAPTERS = frozenset(
    {"dermgen.runner", "dermgen.data.ray_data", "dermgen.train.lora_ray", "dermgen.train.classifier_ray"}
)
CLI_LAYER = frozenset({"dermgen.cli", "dermgen.commands", "dermgen.console"})
CLI_ENTRY_POINTS = CLI_LAYER | {"dermgen.__main__"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _import_nodes(tree: ast.Module, *, module_level: bool):
    """Import statements: all of them, or those that run when the module is imported (not in functions)."""
    if not module_level:
        yield from (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom))
        return
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt))


def imported(
    tree: ast.Module, module: str, is_package: bool, known: set[str], *, module_level: bool
) -> set[str]:
    """Absolute names of the modules an AST imports (`from a import b` gives a.b when that is a module)."""
    out: set[str] = set()
    for node in _import_nodes(tree, module_level=module_level):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = module.split(".") if is_package else module.split(".")[:-1]
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        out.add(base)
        out.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself): Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layering_violations(root: Path) -> list[str]:
    """Every breach of the three rules in the package `root`/dermgen, one line each."""
    files = {module_name(p, root): p for p in sorted((root / "dermgen").rglob("*.py"))}
    known = set(files)
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        anywhere = imported(tree, module, is_package, known, module_level=False)
        top = imported(tree, module, is_package, known, module_level=True)
        ray = sorted(n for n in anywhere if n == "ray" or n.startswith("ray."))
        if ray and module not in RAY_ADAPTERS:
            problems.append(f"{module} imports {', '.join(ray)}: only {sorted(RAY_ADAPTERS)} may import Ray")
        cli = sorted(n for n in anywhere if n in CLI_LAYER)
        if cli and module not in CLI_ENTRY_POINTS:
            problems.append(f"{module} imports {', '.join(cli)}: library code never imports the command line")
        graph[module] = {n for n in top if n in known}
    problems += [f"import cycle: {' -> '.join(c)}" for c in _cycles(graph)]
    return problems


# ------------------------------------------------------------------------------------------------ tests


def test_dermgen_keeps_its_layering():
    assert layering_violations(REPO_ROOT) == []


def test_the_real_package_is_checked():
    """The checker sees the package's modules and their imports (a checker that reads nothing passes all)."""
    files = {module_name(p, REPO_ROOT): p for p in (REPO_ROOT / "dermgen").rglob("*.py")}
    assert {"dermgen.plan", "dermgen.runner", "dermgen.cli", "dermgen.train.lora_ray"} <= set(files)
    tree = ast.parse(files["dermgen.runner"].read_text())
    assert "ray" in imported(tree, "dermgen.runner", False, set(files), module_level=False)


def _package(root: Path, modules: dict[str, str]) -> Path:
    for name, source in {"dermgen/__init__.py": "", **modules}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root


def test_ray_in_a_stage_module_is_caught(tmp_path):
    root = _package(
        tmp_path,
        {
            "dermgen/plan.py": "import ray\n",
            "dermgen/worker.py": "def render():\n    from ray import get\n    return get\n",
            "dermgen/runner.py": "import ray\n",
        },
    )
    problems = layering_violations(root)
    assert any(p.startswith("dermgen.plan imports ray:") for p in problems), problems
    assert any(p.startswith("dermgen.worker imports ray:") for p in problems), problems  # lazy imports too
    assert not any(p.startswith("dermgen.runner") for p in problems), problems


def test_library_importing_the_cli_is_caught(tmp_path):
    root = _package(
        tmp_path,
        {
            "dermgen/cli.py": "from dermgen import store\n",
            "dermgen/store.py": "def f():\n    from dermgen.cli import main\n",
            "dermgen/train/__init__.py": "",
            "dermgen/train/lora.py": "from ..cli import main\n",
            "dermgen/__main__.py": "from dermgen.cli import main\n",
            "dermgen/console.py": "",
            "dermgen/shards.py": "from dermgen.console import print_json\n",
        },
    )
    problems = layering_violations(root)
    assert any(p.startswith("dermgen.shards imports dermgen.console") for p in problems), problems
    assert any(p.startswith("dermgen.store imports dermgen.cli") for p in problems), problems
    assert any(p.startswith("dermgen.train.lora imports dermgen.cli") for p in problems), problems
    assert not any(p.startswith("dermgen.__main__") for p in problems), problems


def test_import_cycle_is_caught(tmp_path):
    root = _package(
        tmp_path,
        {
            "dermgen/cli.py": "from dermgen import commands\n",
            "dermgen/commands.py": "import dermgen.shards\n",
            "dermgen/shards.py": "from dermgen.cli import main\n",
            "dermgen/lazy.py": "def f():\n    import dermgen.late\n",
            "dermgen/late.py": "import dermgen.lazy\n",
        },
    )
    problems = layering_violations(root)
    assert "import cycle: dermgen.cli -> dermgen.commands -> dermgen.shards" in problems, problems
    assert not any("dermgen.lazy" in p for p in problems if p.startswith("import cycle")), problems
