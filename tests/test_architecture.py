"""The layout's rules: no import cycle in the package, and the training child process (which
runs the trainer) imports core only, never the plugin (Qt, napari)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import napari_semimoe

PKG = Path(napari_semimoe.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> package modules it imports (module level and inside functions alike;
    ``if TYPE_CHECKING:`` blocks excluded: they never run)."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip |= {id(n) for b in node.body for n in ast.walk(b)}
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a package importing its own submodules is none)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if d.startswith(m + "."):
                continue
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "napari_semimoe.plugin.panels.active" in graph["napari_semimoe.plugin.widget"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The walker sees function-level imports (the widget <-> panel cycle hid in one)."""
    pkg = tmp_path / "napari_semimoe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    graph = import_graph()
    assert "napari_semimoe.b" in graph["napari_semimoe.a"]
    assert "napari_semimoe.a" in graph["napari_semimoe.b"]  # seen inside a function
    assert find_cycle(graph) in (
        ["napari_semimoe.a", "napari_semimoe.b", "napari_semimoe.a"],
        ["napari_semimoe.b", "napari_semimoe.a", "napari_semimoe.b"],
    )


def test_the_training_child_imports_no_plugin_module(tmp_path):
    """Run the child's imports (its entry module, then what the entry imports) in a fresh
    interpreter, as a spawned process does, and list the plugin modules loaded."""
    code = (
        "import sys\n"
        "import napari_semimoe.plugin.training_process as tp\n"
        "from napari_semimoe.core.errors import InputError\n"
        "from napari_semimoe.core.train import TrainConfig, Trainer, TrainingError\n"
        "from napari_semimoe.core.trainset import load_trainset\n"
        "gui = ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'psygnal')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in gui\n"
        "             or m.startswith('napari_semimoe.plugin')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    loaded = eval(out)  # noqa: S307 - our own printed list
    allowed = {"napari_semimoe.plugin", "napari_semimoe.plugin.training_process"}
    assert "napari_semimoe.plugin.training_process" in loaded
    assert set(loaded) <= allowed, loaded  # no Qt, no napari, no other plugin module


def test_panels_never_import_each_other():
    graph = import_graph()
    panels = {m for m in graph if m.startswith("napari_semimoe.plugin.panels.")}
    assert len(panels) >= 4
    for m in panels:
        assert not (graph[m] & panels), (m, graph[m] & panels)
