"""The package's import arrows, read from the source with ``ast`` (every ``import``
that runs, module level or inside a function; ``if TYPE_CHECKING:`` blocks never run):
the model side (``lorm.backbones``) never reaches up into the FCIL driver, the roles
import downwards only, and there is no import circle anywhere in lorm."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "lorm"


def module_name(path: Path) -> str:
    parts = ["lorm", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The lorm modules ``name`` imports, each with the packages above it (their
    ``__init__`` runs first) except those above ``name`` itself; ``from X import y``
    counts ``X.y`` when that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin
                       for a in node.names]
        else:
            continue
        for target in targets:
            if target not in known:
                continue
            out.add(target)
            parts = target.split(".")
            # the packages above the target run first, but not one that holds ``name``:
            # that one is already running when ``name`` is loaded
            out.update(p for p in (".".join(parts[:i]) for i in range(2, len(parts)))
                       if not name.startswith(p + "."))
    out.discard(name)
    return out & known


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_reader_sees_the_arrows_it_should():
    edges = graph()
    assert "lorm.backbones.base" in edges["lorm.backbones.timm_vit"]
    assert "lorm.pretrained" in edges["lorm.backbones.base"]
    assert "lorm.backbones" in edges["lorm.fcil.federation"]  # the package's __init__ runs first
    assert "lorm.fcil.datasets.clinc150" in edges["lorm.fcil.datasets"]  # from . import x
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(toy) == [{"a", "b", "c"}]


def test_backbones_never_import_the_fcil_driver():
    edges = graph()
    upward = {(m, t) for m, targets in edges.items() if m.startswith("lorm.backbones")
              for t in targets if t.startswith("lorm.fcil")}
    assert upward == set()


def test_no_import_circle_anywhere_in_lorm():
    assert [sorted(c) for c in cycles(graph())] == []


def test_the_roles_and_flower_import_downwards_only():
    """The Server never imports the Client or a Transport; the Client none of the
    Server, a Transport or the schedule; nothing below lorm.flower imports it."""
    edges = graph()
    assert not edges["lorm.fcil.server"] & {"lorm.fcil.client", "lorm.fcil.transport",
                                             "lorm.fcil.loop"}
    assert not edges["lorm.fcil.client"] & {"lorm.fcil.server", "lorm.fcil.transport",
                                             "lorm.fcil.loop"}
    assert not {m for m, targets in edges.items() if not m.startswith("lorm.flower")
                for t in targets if t.startswith("lorm.flower")}
