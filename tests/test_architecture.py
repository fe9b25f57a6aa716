"""The processes' rules: the training child process (which runs the trainer) imports core
only, never the plugin (Qt, napari); the plugin's panels never import each other."""

from __future__ import annotations

import subprocess
import sys

from test_layout import _graph


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
    """Panels talk through the session only (the import graph and its cycle check are
    tests/test_layout.py's)."""
    graph = _graph()
    panels = {m for m in graph if m.startswith("napari_semimoe.plugin.panels.")}
    assert len(panels) >= 4
    for m in panels:
        assert not (set(graph.successors(m)) & panels), (m, set(graph.successors(m)) & panels)
