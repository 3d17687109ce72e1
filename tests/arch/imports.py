"""The module import graph of the installed packages (faircalib, faircalib.orchestrator, .workers,
.kernels), built from the source with `ast` (every import statement, module-level or inside a function,
counts: a lazy import is still a dependency; importing `a.b.c` also runs the package `a.b`'s
`__init__`, so it adds that edge too, except for the importer's own enclosing packages). Used by test_layers.py; `python tests/arch/imports.py`
prints the cycles.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TREES = {"faircalib": ROOT / "faircalib", "faircalib.orchestrator": ROOT / "orchestrator",
         "faircalib.workers": ROOT / "workers", "faircalib.service": ROOT / "service",
         "faircalib.kernels": ROOT / "kernels"}


def modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every .py of the four trees."""
    out: dict[str, Path] = {}
    for pkg, base in TREES.items():
        for f in sorted(base.rglob("*.py")):
            rel = f.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if "migrations" in rel.parts and pkg.endswith("orchestrator"):
                continue  # alembic scripts: loaded by alembic, not imported
            out[".".join([pkg, *parts])] = f
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module prefix of a dotted name (a `from X import attr` names X or X.attr)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    for mod, path in known.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for blk in ast.walk(tree) if isinstance(blk, ast.If) and _is_type_checking(blk.test)
                       for stmt in blk.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:  # `if TYPE_CHECKING:` imports are annotations, not dependencies
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] or [base]
            for t in targets:
                r = _resolve(t, known)
                while r is not None:  # importing a.b.c runs a.b's __init__ first (not the importer's own)
                    if r != mod and not mod.startswith(r + "."):
                        edges[mod].add(r)
                    r = _resolve(r.rpartition(".")[0], known)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def package_of(mod: str) -> str:
    """The layer-level unit: faircalib.<subpackage> (or the service package), e.g. faircalib.quant."""
    parts = mod.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else mod


def package_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for a, bs in edges.items():
        pa = package_of(a)
        out.setdefault(pa, set())
        for b in bs:
            if package_of(b) != pa:
                out[pa].add(package_of(b))
    return out


if __name__ == "__main__":
    g = graph()
    mc, pc = cycles(g), cycles(package_graph(g))
    print(f"{len(g)} modules, {sum(map(len, g.values()))} import edges")
    print(f"module cycles: {len(mc)}")
    for c in mc:
        print("  " + " <-> ".join(c))
    print(f"package cycles: {len(pc)}")
    for c in pc:
        print("  " + " <-> ".join(c))
