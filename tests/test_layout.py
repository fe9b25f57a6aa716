"""Package layout rules (issue 15): no import cycle in src/, and no long module without a reason.

An import cycle makes what a module sees depend on which one was imported first (a name that
is "not defined yet" in one order and fine in the other), so a family or a command added later
can break start-up for everyone. Imports inside functions count too: they run later but still
close a cycle. Edges come from the source with :mod:`ast`, so nothing is imported here.

Long modules: a module over :data:`MAX_LINES` lines states why in its docstring, in a sentence
that gives its length in lines and the reason, e.g. "Over 500 lines because ..." or "longer
than most (about 600 lines) because ..." (matched by :data:`REASON`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx

import napari_semimoe

PACKAGE_DIR = Path(napari_semimoe.__file__).parent
SRC = PACKAGE_DIR.parent
MAX_LINES = 500
#: "<n> lines ... because", "... on purpose" or "... for a reason:", within one sentence.
REASON = re.compile(r"\b\d+ lines\b[^.]*?\b(because|on purpose|for a reason)\b")


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (``__init__`` names its package)."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's own modules that ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub where there is one; only a
            # name defined in pkg itself makes pkg a dependency (a submodule's
            # `from . import sibling` does not depend on its package's __init__).
            subs = {f"{target}.{alias.name}" for alias in node.names}
            found.update(subs & modules.keys())
            if not subs <= modules.keys():
                found.add(target)
    return {m for m in found if m in modules and m != name}


def _graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        graph.add_edges_from((name, dep) for dep in _imports(name, path, modules))
    return graph


def test_the_import_graph_sees_relative_function_level_and_package_imports():
    """The graph finds the edges the cycle check relies on, or it would pass vacuously."""
    graph = _graph()
    assert len(graph) > 30
    # relative, module-level: ``from .app import main`` in cli/__init__.py
    assert graph.has_edge("napari_semimoe.cli", "napari_semimoe.cli.app")
    # relative two levels up, inside a function: ``from ..core.slide import open_slide``
    assert graph.has_edge("napari_semimoe.cli.predict", "napari_semimoe.core.slide")
    # ``from ..slide import tissue_mask`` from a subpackage; ``from . import blocks`` is an
    # edge to the sibling module, not to the package
    assert graph.has_edge("napari_semimoe.core.cohort.engine",
                          "napari_semimoe.core.cohort.blocks")  # fmt: skip
    assert not graph.has_edge("napari_semimoe.core.cohort.engine",
                              "napari_semimoe.core.cohort")  # fmt: skip
    assert graph.has_edge("napari_semimoe.core.inference.slide_job", "napari_semimoe.core.slide")
    # the writer depends on the reader, not the other way round; the run folder checks
    # settings with the config alone, not the trainer
    assert graph.has_edge("napari_semimoe.core.runfolder", "napari_semimoe.core.config")
    assert not graph.has_edge("napari_semimoe.core.runfolder", "napari_semimoe.core.train")
    assert graph.has_edge("napari_semimoe.core.tiff_writer", "napari_semimoe.core.slide")
    assert not graph.has_edge("napari_semimoe.core.slide", "napari_semimoe.core.tiff_writer")


def test_no_import_cycle_in_the_package():
    graph = _graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert cycles == [], f"import cycles: {cycles}"


def test_a_cycle_would_be_reported(tmp_path, monkeypatch):
    """The check itself: two modules importing each other (one inside a function) are a cycle."""
    pkg = tmp_path / "napari_semimoe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    monkeypatch.setitem(globals(), "PACKAGE_DIR", pkg)
    monkeypatch.setitem(globals(), "SRC", tmp_path)
    cycles = [sorted(c) for c in nx.strongly_connected_components(_graph()) if len(c) > 1]
    assert cycles == [["napari_semimoe.a", "napari_semimoe.b"]]


def test_every_long_module_says_why_in_its_docstring():
    missing = []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n <= MAX_LINES:
            continue
        doc = " ".join((ast.get_docstring(ast.parse(text)) or "").split())
        if not REASON.search(doc):
            missing.append(f"{name} ({n} lines)")
    assert missing == [], f"over {MAX_LINES} lines without a reason in the docstring: {missing}"


def test_the_reason_convention_matches_what_the_long_modules_say():
    assert REASON.search("Over 500 lines because reading is one trust boundary")
    assert REASON.search("longer than most (about 600 lines) because it is the one place")
    assert REASON.search("Over 500 lines on purpose: the Trainer is one state machine")
    assert not REASON.search("It reads 500 lines. Because of that ...")
    assert not REASON.search("A long module because it grew")
