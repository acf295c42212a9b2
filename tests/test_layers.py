"""DESIGN.md layers, checked on the source and in a fresh interpreter. A leak fails CI.

Within segdesk, every import statement is read with ``ast`` (module level, inside functions and
under ``if TYPE_CHECKING``; relative or absolute; ``from segdesk.core import x`` counts as importing
the module ``segdesk.core.x``): core imports only core; ml only core and ml; bench and reliability
are imported by none of core, ml and qt; and the modules import no circle, lazy imports included,
so that no module's meaning depends on which of two was imported first. Third-party names are
checked in ``sys.modules`` after importing every module of a layer: core has neither Qt nor torch,
ml has no Qt.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "segdesk"

# layer -> the only segdesk layers its modules may import (layers not named here: any but FORBIDDEN)
ALLOWED = {"core": {"core"}, "ml": {"core", "ml"}}
# layer -> segdesk layers its modules must never import
FORBIDDEN = {layer: {"bench", "reliability"} for layer in ("core", "ml", "qt")}


@dataclass(frozen=True)
class Edge:
    """One import of segdesk module ``target`` by ``source``, at ``line``, spelled ``text``."""

    source: str
    target: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.source} (line {self.line}: {self.text}) imports {self.target}"


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file of every module and package under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The segdesk module that importing ``name`` runs last (``a.b.func`` -> ``a.b``); None outside."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    """Every import of a segdesk module in ``path``'s source, at any depth."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    source = path.read_text(encoding="utf-8")
    edges = []
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: '.' is the package, each further dot one package up
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # 'from a import b' imports the module a.b when there is one, else a name of a
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                     for alias in node.names]
        else:
            continue
        text = ast.get_source_segment(source, node) or ast.unparse(node)
        for target in dict.fromkeys(filter(None, (_resolve(n, modules) for n in names))):
            if target != module:
                edges.append(Edge(module, target, node.lineno, " ".join(text.split())))
    return edges


def import_graph(root: Path = PACKAGE) -> list[Edge]:
    modules = module_names(root)
    return [edge for name, path in modules.items() for edge in imports(name, path, modules)]


def layer_of(module: str) -> str:
    """'segdesk.core.imageio' -> 'core'; 'segdesk.cli' -> 'cli'; the root package (which holds only
    the version, and runs before any segdesk module) -> '', which every layer may import."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(edges: list[Edge]) -> list[str]:
    bad = []
    for edge in edges:
        source, target = layer_of(edge.source), layer_of(edge.target)
        allowed = ALLOWED.get(source)
        if allowed is not None and target not in allowed | {""}:
            bad.append(f"{edge}: segdesk.{source} may import only "
                       + ", ".join(f"segdesk.{name}" for name in sorted(allowed)))
        elif target in FORBIDDEN.get(source, ()):
            bad.append(f"{edge}: segdesk.{source} must not import segdesk.{target}")
    return bad


def _shortest_path(graph: dict[str, list[Edge]], start: str, goal: str) -> list[Edge] | None:
    """The fewest edges leading from ``start`` to ``goal`` (breadth first); None when none does."""
    paths: dict[str, list[Edge]] = {start: []}
    queue = [start]
    for node in queue:
        for edge in graph.get(node, ()):
            if edge.target == goal:
                return [*paths[node], edge]
            if edge.target not in paths:
                paths[edge.target] = [*paths[node], edge]
                queue.append(edge.target)
    return None


def cycles(edges: list[Edge]) -> list[tuple[list[str], list[Edge]]]:
    """Each group of modules that reach each other through imports (a strongly connected
    component), with the shortest circle inside it: one planted import shows as one entry."""
    graph: dict[str, list[Edge]] = {}
    for edge in edges:
        graph.setdefault(edge.source, []).append(edge)
    circle_of = {m: _shortest_path(graph, m, m) for m in sorted(graph)}
    found, seen = [], set()
    for module, circle in circle_of.items():
        if circle is None or module in seen:
            continue
        group = sorted(m for m, c in circle_of.items() if c is not None
                       and _shortest_path(graph, module, m) is not None
                       and _shortest_path(graph, m, module) is not None)
        seen.update(group)
        found.append((group, min((circle_of[m] for m in group), key=len)))
    return found


def test_each_layer_imports_only_the_layers_below():
    bad = layer_violations(import_graph())
    if bad:
        pytest.fail("segdesk layer violations (DESIGN.md):\n" + "\n".join(bad), pytrace=False)


def test_no_import_cycles_inside_segdesk():
    found = cycles(import_graph())
    if found:
        pytest.fail("import cycles inside segdesk:\n" + "\n".join(
            " -> ".join([circle[0].source, *(e.target for e in circle)])
            + "".join(f"\n    {edge}" for edge in circle)
            + f"\n    ({len(group)} modules import each other around it: {', '.join(group)})"
            for group, circle in found), pytrace=False)


def test_the_checks_catch_every_form_of_import(tmp_path):
    """The checks above are only as good as the reader: each way of importing is an edge, an
    upward import (at module level or inside a function) is a violation, and a lazy import back
    closes a circle."""
    root = tmp_path / "segdesk"
    for name in ("__init__", "core/__init__", "core/a", "core/b", "ml/__init__", "ml/m", "qt/__init__", "qt/w"):
        (root / f"{name}.py").parent.mkdir(parents=True, exist_ok=True)
        (root / f"{name}.py").write_text("")
    (root / "core" / "a.py").write_text(
        "from . import b\n"
        "def f():\n"
        "    from segdesk.qt import w\n"
        "    import segdesk.ml.m as m\n"
        "from ..ml.m import thing\n")
    (root / "core" / "b.py").write_text("def g():\n    import segdesk.core.a\n")
    edges = import_graph(root)
    assert {(e.source, e.target, e.line) for e in edges} == {
        ("segdesk.core.a", "segdesk.core.b", 1), ("segdesk.core.a", "segdesk.qt.w", 3),
        ("segdesk.core.a", "segdesk.ml.m", 4), ("segdesk.core.a", "segdesk.ml.m", 5),
        ("segdesk.core.b", "segdesk.core.a", 2)}
    assert sorted(v.split(":")[0] for v in layer_violations(edges)) == [
        "segdesk.core.a (line 3", "segdesk.core.a (line 4", "segdesk.core.a (line 5"]
    assert [group for group, _ in cycles(edges)] == [["segdesk.core.a", "segdesk.core.b"]]


CHECK = """
import sys, importlib, pkgutil
import segdesk.{layer} as pkg
for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
    importlib.import_module(m.name)
bad = sorted(n for n in sys.modules if n.split(".")[0] in {banned})
print(",".join(bad))
"""


@pytest.mark.parametrize(
    "layer, banned",
    [("core", {"PySide6", "torch", "torchvision"}), ("ml", {"PySide6", "shiboken6"})],
)
def test_layer_imports_nothing_banned(layer, banned):
    out = subprocess.run(
        [sys.executable, "-c", CHECK.format(layer=layer, banned=sorted(banned))],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert out == "", f"segdesk.{layer} imports {out}"


def test_torch_and_torchvision_are_a_matching_pair():
    import torch
    import torchvision
    from torchvision.ops import nms  # fails when torchvision was built for another torch

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]
    assert torchvision.__version__
