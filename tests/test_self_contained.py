"""The repository tests itself: no test or benchmark reads outside it, and calibration tooling stays out
of the runtime package."""

from __future__ import annotations

import ast
import re

from support import REPO_ROOT

OUTSIDE = re.compile(r"""["'/]shared["'/]|\.\./shared|parents\[\d+\]\s*\.\s*parent""")


def _py_files(*folders: str):
    for folder in folders:
        yield from sorted((REPO_ROOT / folder).rglob("*.py"))


def test_no_test_or_benchmark_reads_outside_the_repository():
    allowed = {REPO_ROOT / "tests" / "assets" / "regenerate.py"}  # rebuilds the assets; never run by tests
    offenders = []
    for f in _py_files("tests", "benchmarks"):
        if f in allowed or f == REPO_ROOT / "tests" / "test_self_contained.py":
            continue
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if OUTSIDE.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{f.relative_to(REPO_ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_runtime_package_does_not_import_calibration_tooling():
    offenders = []
    for f in _py_files("dermgen"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{f.relative_to(REPO_ROOT)} imports {n}" for n in names if n.split(".")[0] == "filterlab"
            ]
    assert not offenders, offenders
    assert not (REPO_ROOT / "dermgen" / "filters" / "noise.py").exists()
    assert not (REPO_ROOT / "dermgen" / "filters" / "evaluation.py").exists()
