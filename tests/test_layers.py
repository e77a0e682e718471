"""The layer rule of docs/architecture.md, checked on the source: imports point down, and no package cycle.

Every `import melfusion.X` / `from melfusion.X import` in src/melfusion (module level or inside functions)
is read with `ast`. A module may import its own package, a package of a lower layer, never one of its own
layer (other than itself) or above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "melfusion"
LAYERS: list[set[str]] = [
    {"errors", "limits", "__init__", "assets"},
    {"utils"},
    {"audio"},
    {"models", "encoders"},
    {"guidance"},
    {"data"},
    {"pipelines", "convert"},
    {"loading"},
    {"training", "evaluation", "pairing"},
    {"recipes"},
    {"commands", "cli", "__main__"},
]
LEVEL = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def package_of(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported melfusion package) of every absolute melfusion import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + (
                [f"{node.module}.{a.name}" for a in node.names] if node.module == "melfusion" else []
            )
        for name in names:
            parts = name.split(".")
            if parts[0] == "melfusion" and len(parts) > 1:
                out.append((node.lineno, parts[1]))
    return out


def test_every_package_has_a_layer():
    packages = {package_of(p) for p in SRC.rglob("*.py")}
    assert packages <= set(LEVEL), (
        f"give these a layer in tests/test_layers.py: {sorted(packages - set(LEVEL))}"
    )


def test_imports_point_down():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        src = package_of(path)
        for line, dst in imports(path):
            if dst == src or dst not in LEVEL:
                continue
            if src == "__init__":  # the package root re-exports the public API (imported lazily)
                continue
            if LEVEL[dst] >= LEVEL[src]:
                bad.append(
                    f"{path.relative_to(SRC.parent)}:{line}: {src} (layer {LEVEL[src]}) imports {dst} (layer {LEVEL[dst]})"
                )
    assert not bad, "imports that do not point down:\n" + "\n".join(bad)


@pytest.mark.parametrize("package", sorted({package_of(p) for p in SRC.rglob("*/*.py")}))
def test_no_import_cycle_between_modules_of_a_package(package):
    """Imports between the modules of one package (module level or inside functions) form no cycle; a
    package's __init__ re-exporting its modules is not an edge."""
    graph: dict[str, set[str]] = {}
    inits = set()
    for path in (SRC / package).rglob("*.py"):
        mod = ".".join(path.relative_to(SRC.parent).with_suffix("").parts)
        if mod.endswith(".__init__"):
            inits.add(mod.removesuffix(".__init__"))
            continue
        graph[mod] = {
            node.module
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("melfusion.")
        }
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> None:
        for dep in sorted(graph[node]):
            if dep in stack or dep == node:
                raise AssertionError(f"import cycle: {' -> '.join([*stack, node, dep])}")
            if dep in graph and dep not in done:
                visit(dep, [*stack, node])
        done.add(node)

    for mod in sorted(graph):
        if mod not in done:
            visit(mod, [])
