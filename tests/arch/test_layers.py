"""The layering rules of docs/architecture.md, checked on the source: no import cycles (module or
package level), the core imports none of the service's dependencies, each layer imports only the layers
below it, and no reference points outside the repository."""
from __future__ import annotations

import json
import subprocess
import sys

from imports import ROOT, cycles, graph, package_graph, package_of

SERVICE_DEPS = ("ray", "sqlalchemy", "alembic", "boto3", "botocore", "click", "yaml")
# what each layer may import (besides itself and the core `faircalib.*` packages below the service)
LAYERS = {"faircalib.kernels": set(), "faircalib.service": set(), "faircalib.workers": {"faircalib.service"},
          "faircalib.orchestrator": {"faircalib.service", "faircalib.workers"}}
SERVICE = tuple(LAYERS)


def test_no_import_cycles():
    g = graph()
    assert len(g) > 100  # the graph really covers the tree
    assert cycles(g) == [], cycles(g)
    assert cycles(package_graph(g)) == []


def test_each_layer_imports_only_the_layers_below_it():
    pg = package_graph(graph())
    for pkg, deps in pg.items():
        service_deps = {d for d in deps if d in SERVICE}
        if pkg in LAYERS:
            assert service_deps <= LAYERS[pkg], (pkg, service_deps - LAYERS[pkg])
        elif pkg.startswith("faircalib"):  # the core library
            assert service_deps <= {"faircalib.kernels"}, (pkg, service_deps)


LM_EVAL_INTEGRATION = ("faircalib.eval.harness", "faircalib.eval.lm", "faircalib.eval.tasks.suite_hooks")


def _loaded_after_importing(modules: list[str]) -> list[str]:
    code = (f"import importlib, json, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            f"print(json.dumps(sorted(k for k in {list(SERVICE_DEPS)!r} if k in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_core_imports_no_service_dependency():
    """Every core module, imported in a fresh interpreter, loads none of ray, sqlalchemy, alembic, boto3,
    click, yaml. The lm-eval integration modules load lm-eval, which itself imports yaml: with them,
    nothing else of the list."""
    core = sorted(m for m in graph() if package_of(m) not in SERVICE[1:])
    plain = [m for m in core if m not in LM_EVAL_INTEGRATION]
    assert len(plain) > 60
    assert _loaded_after_importing(["faircalib"]) == []
    assert _loaded_after_importing(plain) == []
    assert _loaded_after_importing(core) == ["yaml"]


def test_no_core_source_imports_a_service_dependency():
    import ast

    from imports import modules

    bad = []
    for mod, path in modules().items():
        if package_of(mod) in SERVICE[1:]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{mod}: {n}" for n in names if n.split(".")[0] in SERVICE_DEPS]
    assert bad == []


def test_no_reference_points_outside_the_repository():
    """Method and design references are docs/method.md / docs/architecture.md, inside the repository."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    needles = ("SPEC" + ".md", "DESIGN" + ".md", "../" + "shared", "/work/" + "shared")
    hits = []
    for name in files:
        p = ROOT / name
        if not p.is_file() or p.suffix in (".safetensors", ".png", ".jsonl") or p.stat().st_size > 2_000_000:
            continue
        text = p.read_text(encoding="utf-8", errors="ignore")
        hits += [f"{name}: {n}" for n in needles if n in text]
    assert hits == []
    for doc in ("docs/method.md", "docs/architecture.md"):
        assert (ROOT / doc).is_file()


def test_cited_sections_of_the_method_doc_exist():
    """Every `docs/method.md §N` cited in the tree names a section the document has."""
    import re

    doc = (ROOT / "docs/method.md").read_text()
    have = set(re.findall(r"^## (\d+)\.", doc, flags=re.M))
    cited = set()
    for p in list((ROOT / "faircalib").rglob("*.py")) + list(ROOT.glob("*/*.py")) + [ROOT / "README.md"]:
        cited |= {n for n in re.findall(r"docs/method\.md §(\d+)", p.read_text(encoding="utf-8"))}
    assert cited and cited <= have, cited - have
