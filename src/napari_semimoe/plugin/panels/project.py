"""Page 1 · Project and tiles: the project folder, the current slide, the working scale and
tile of the NEXT training, training tiles, and the annotations' autosave.

It opens projects and images into the session (``project_changed``, ``image_changed``) and
keeps the project's tiles and annotation files in step with the layers; it re-cuts the
unlabeled pool a moment after the tiles change (and, while training runs, after painting).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from ...core.data import Geometry
from ...core.errors import InputError
from ...core.project import Project, Tile
from ...core.sparse import BACKGROUND_LABEL, UNPAINTED, UNPAINTED_WORDS, next_label
from ...core.trainset import TRAINSET_FILE
from ..attribute_field import AttributeField
from ..class_table import ClassesBox
from ..common import camera, notify, rect
from ..cutter import TrainsetCutter
from ..layers import LABELS_LAYER, TILES_LAYER, NapariLayers
from ..session import Session

NO_PROJECT = (
    "Choose a project folder first (type a path and press Enter, or Open…): painting and "
    "tiles stay locked until then, so nothing is left unsaved."
)
#: Re-cut trainset.npz this long after the last tile edit / stroke during training (ms).
TILES_RECUT_MS, PAINT_RECUT_MS = 1000, 5000


class _Messages(QObject):
    """Carries messages from worker threads to the main thread (queued signal)."""

    error = Signal(str)


class ProjectPanel(QWidget):
    def __init__(self, session: Session, layers: NapariLayers, cutter: TrainsetCutter) -> None:
        super().__init__()
        self.session, self.layers, self.cutter = session, layers, cutter
        self.viewer = layers.viewer
        self._warned_unsaved = False
        self._messages = _Messages(self)
        self._messages.error.connect(session.save_failed)  # writer thread -> GUI thread
        session.save_error.connect(self._save_failed)
        self._build()
        self._autosave = QTimer(self)
        self._autosave.setSingleShot(True)
        self._autosave.setInterval(800)
        self._autosave.timeout.connect(self.session.save_annotations)
        # Tile changes update the unlabeled pool (trainset.npz) a moment after the last one;
        # while training runs, so does painting (a new tile is not trained on as blank).
        self._pool_timer = QTimer(self)
        self._pool_timer.setSingleShot(True)
        self._pool_timer.timeout.connect(self._refresh_pool)
        session.tiles_changed.connect(lambda: self._pool_timer.start(TILES_RECUT_MS))
        self.scale_spin.valueChanged.connect(self._form_geometry)
        self.tile_spin.valueChanged.connect(self._form_geometry)
        self._form_geometry()
        self.viewer.layers.events.removing.connect(self._on_removing)
        self.viewer.layers.events.inserted.connect(self.refresh_layers)
        self.viewer.layers.events.removed.connect(self.refresh_layers)

    def _build(self) -> None:
        f = QFormLayout(self)
        row = QHBoxLayout()
        self.project_edit = QLineEdit()
        self.project_edit.setPlaceholderText("type a folder + Enter: annotations, tiles, runs")
        self.project_edit.setToolTip(
            "the project folder (created if new): type its path and press Enter, or Open…"
        )
        self.project_edit.returnPressed.connect(self._project_typed)
        self.project_edit.editingFinished.connect(self._project_left)
        browse = QPushButton("Open…")
        browse.clicked.connect(self._browse_project)
        row.addWidget(self.project_edit)
        row.addWidget(browse)
        f.addRow("Project", row)
        self.image_combo = QComboBox()
        self.image_combo.currentTextChanged.connect(self._switch_image)
        f.addRow("Slide", self.image_combo)
        self.attribute_field = AttributeField(self.session)  # site / scanner / stain batch
        f.addRow("Comes from", self.attribute_field)
        self.scale_spin = QDoubleSpinBox()
        self.scale_spin.setRange(1.0, 64.0)
        self.scale_spin.setSingleStep(0.5)
        self.scale_spin.setValue(2.0)
        self.scale_spin.setToolTip("working scale: the model sees the slide downsampled by this")
        f.addRow("Working scale", self.scale_spin)
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(64, 1024)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setValue(256)
        f.addRow("Tile (model px)", self.tile_spin)
        add = QPushButton("Add training tile (view centre)")
        add.clicked.connect(self.add_tile_at_center)
        f.addRow(add)
        self.classes_box = ClassesBox(self.session, self.layers, self.save_now)
        f.addRow(self.classes_box)
        brushes = QHBoxLayout()
        self.gland_brush = QPushButton("Paint a gland")
        self.gland_brush.setToolTip("brush with a new gland label (each gland its own colour)")
        self.gland_brush.clicked.connect(lambda: self.pick_brush("gland"))
        # A multi-class project's class picker: the brush paints the chosen class's id.
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("the class the brush paints (the project's classes)")
        self.class_combo.activated.connect(lambda _i: self.pick_brush("gland"))
        self.class_label = QLabel("Class to paint")
        f.addRow(self.class_label, self.class_combo)
        self.background_brush = QPushButton("Paint background")
        self.background_brush.setToolTip(
            "brush that marks tissue as NOT gland (light grey); a tile with background paint "
            "learns only what is painted, unless you set its unpainted pixels to background"
        )
        self.background_brush.clicked.connect(lambda: self.pick_brush("background"))
        brushes.addWidget(self.gland_brush)
        brushes.addWidget(self.background_brush)
        f.addRow(brushes)  # the buttons say what they paint: no label column to widen it
        self.session.project_changed.connect(lambda _p: self._show_classes())
        self.session.classes_changed.connect(lambda _t: self._show_classes())
        self._show_classes()
        self.unpainted_combo = QComboBox()
        for key in UNPAINTED:
            self.unpainted_combo.addItem(UNPAINTED_WORDS[key], key)
        self.unpainted_combo.setToolTip(
            "what the model learns from the pixels you did not paint in a training tile: "
            "background (paint every gland of the tile), or unknown (paint only some glands "
            "and some background; the rest is left out of training). Applies to the selected "
            "tiles of the 'training tiles' layer, or to every tile of this slide when none "
            "is selected."
        )
        self.unpainted_combo.activated.connect(self._unpainted_chosen)
        f.addRow("Unpainted pixels", self.unpainted_combo)
        for c in (
            self.image_combo,
            self.unpainted_combo,
            self.class_combo,
        ):  # long words must not widen the page
            c.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            c.setMinimumContentsLength(8)
        self.project_edit.setMinimumWidth(60)
        self.unpainted_line = QLabel("")
        self.unpainted_line.setWordWrap(True)
        f.addRow(self.unpainted_line)
        hint = QLabel(
            "Paint glands in 'annotations' inside the yellow tiles; unpainted tile pixels are "
            "background unless the tile says unknown (above: then paint only the glands you "
            "are sure of, and some background with the background brush). "
            "Tiles and painting are saved in the project folder as you work "
            "(within a second); earlier versions of each image's annotations are kept and "
            "can be restored in 3 · Review. Without a project, painting is locked."
        )
        hint.setWordWrap(True)
        f.addRow(hint)

    # ------------------------------------------------------------------ sparse painting

    def _show_classes(self) -> None:
        """The class picker: the project's classes (hidden in a binary project)."""
        table = self.session.classes
        keep = self.class_combo.currentData()
        self.class_combo.clear()
        if table is not None:
            from qtpy.QtGui import QColor, QIcon, QPixmap

            for k in range(1, table.n_foreground + 1):
                pix = QPixmap(12, 12)
                pix.fill(QColor(table.colours[k]))
                self.class_combo.addItem(QIcon(pix), table.names[k], k)
            self.class_combo.setCurrentIndex(max(0, self.class_combo.findData(keep)))
        self.class_combo.setVisible(table is not None)
        self.class_label.setVisible(table is not None)
        self.gland_brush.setText("Paint a gland" if table is None else "Paint class")
        self.gland_brush.setToolTip(
            "brush with a new gland label (each gland its own colour)"
            if table is None
            else "brush that paints the class chosen beside it"
        )

    def pick_class(self, k: int) -> None:
        """Choose class ``k`` in the picker and take the brush with it."""
        self.class_combo.setCurrentIndex(self.class_combo.findData(k))
        self.pick_brush("gland")

    def pick_brush(self, kind: str) -> None:
        """The annotations layer, active, in paint mode with a new gland id (a multi-class
        project: the picked class's id) or the background brush's id."""
        if self.session.project is None:
            notify(NO_PROJECT, "warning")
            return
        labels = self.layers.labels(create=True)
        if labels is None:
            notify("open a slide first", "warning")
            return
        if kind == "background":
            labels.selected_label = BACKGROUND_LABEL
        elif self.session.classes is not None:
            labels.selected_label = int(self.class_combo.currentData() or 1)
        else:
            labels.selected_label = next_label(labels.data)
        self.viewer.layers.selection.active = labels
        labels.mode = "paint"

    def chosen_tiles(self) -> list[Tile]:
        """The training tiles the choice applies to: the selected ones, else all of this
        slide's (tiles layer order = the project's, after a sync)."""
        entry = self.session.entry
        if entry is None:
            return []
        self.session.sync_tiles()
        tiles = entry.train_tiles()
        layer = self.layers.tiles()
        picked = sorted(getattr(layer, "selected_data", ()) or ())
        chosen = [tiles[i] for i in picked if i < len(tiles)]
        return chosen or tiles

    def set_unpainted(self, choice: str, tiles: list[Tile] | None = None) -> None:
        """Set what the unpainted pixels of ``tiles`` (default: :meth:`chosen_tiles`) are,
        saved in project.json at once; the training set is re-cut a moment later."""
        if choice not in UNPAINTED:
            raise ValueError(choice)
        project = self.session.project
        tiles = self.chosen_tiles() if tiles is None else tiles
        if project is None or not tiles:
            self.session.say("no training tile to set: add one first")
            return
        for t in tiles:
            t.unpainted = choice
        project.save()
        self._show_unpainted()
        self._pool_timer.start(TILES_RECUT_MS)
        self.session.say(
            f"unpainted pixels of {len(tiles)} tile{'s' if len(tiles) != 1 else ''}: "
            f"{UNPAINTED_WORDS[choice]}"
        )

    def _unpainted_chosen(self, index: int) -> None:
        self.set_unpainted(self.unpainted_combo.itemData(index))

    def _show_unpainted(self, *_: Any) -> None:
        """The choice of the selected tiles (or the slide's) and a count by meaning."""
        entry = self.session.entry
        tiles = [] if entry is None else entry.train_tiles()
        if not tiles:
            self.unpainted_line.setText("")
            return
        layer = self.layers.tiles()
        picked = sorted(getattr(layer, "selected_data", ()) or ())
        chosen = [tiles[i] for i in picked if i < len(tiles)] or tiles
        kinds = {t.unpainted for t in chosen}
        if len(kinds) == 1:
            self.unpainted_combo.setCurrentIndex(UNPAINTED.index(kinds.pop()))
        counts = {k: sum(t.unpainted == k for t in tiles) for k in UNPAINTED}
        words = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        which = f"{len(chosen)} selected" if picked else "none selected: all"
        self.unpainted_line.setText(f"Tiles of this slide: {words} ({which}).")

    def _form_geometry(self, *_: Any) -> None:
        """The form's scale and tile: what the next training will use (not the model's)."""
        self.session.train_geometry = Geometry(
            scale=self.scale_spin.value(), tile=self.tile_spin.value()
        )

    # ------------------------------------------------------------------ project

    def _browse_project(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Project folder")
        if d:
            self.set_project(d)

    def _project_typed(self) -> None:
        """Enter in the Project field opens (or creates) the typed folder."""
        text = self.project_edit.text().strip()
        if not text:
            return
        path = Path(text).expanduser()
        project = self.session.project
        if project is not None and path.resolve() == project.root.resolve():
            return
        self.set_project(path)

    def _project_left(self) -> None:
        """Leaving the field (no Enter) opens nothing: a half-typed path must not become a
        folder. Say how to use it."""
        text = self.project_edit.text().strip()
        current = "" if self.session.project is None else str(self.session.project.root)
        if text and text != current:
            self.session.say(f"press Enter to open or create the project {text}")

    def set_project(self, path: str | Path) -> None:
        """Open (or create) a project folder and restore its annotations and tiles."""
        path = Path(path).expanduser()
        try:
            project = Project(path)
        except InputError as exc:
            self._project_failed(str(exc))
            return
        except OSError as exc:
            self._project_failed(f"{path}: cannot use as a project folder ({exc.strerror or exc})")
            return
        if self.session.project is not None:  # the last strokes belong to the project left
            self.save_now()
        project.writer.on_error = self._messages.error.emit
        self.project_edit.setText(str(path))
        st = project.state
        img = self.layers.image()
        if img is not None and not st.images:
            st.scale = float(img.metadata.get("semimoe_scale", self.scale_spin.value()))
        self.scale_spin.setValue(st.scale)
        self.tile_spin.setValue(st.tile)
        self.session.set_project(project)
        self._switch_image()
        self._lock_without_project()
        self.session.say("; ".join([f"project: {path}", *project.warnings]))
        for w in project.warnings:
            notify(w, "warning")

    def _project_failed(self, msg: str) -> None:
        notify(msg, "warning")
        self.session.say(msg)
        project = self.session.project
        self.project_edit.setText("" if project is None else str(project.root))

    def _lock_without_project(self) -> None:
        """Without a project nothing painted could be saved: lock the annotations and the
        tiles (napari's own edit lock) until a folder is chosen."""
        for name in (LABELS_LAYER, TILES_LAYER):
            if name in self.viewer.layers:
                ly = self.viewer.layers[name]
                want = self.session.project is not None and not getattr(ly, "multiscale", False)
                if ly.editable != want:
                    ly.editable = want

    # ------------------------------------------------------------------ images

    def _switch_image(self, *_: Any) -> None:
        """Show the selected image's annotations and tiles (saving the previous image's)."""
        s, project = self.session, self.session.project
        if project is None:
            return
        img = self.layers.image()
        if s.entry is not None:
            s.save_annotations()
            s.sync_tiles()
        if img is None:
            s.set_entry(None)
            return
        fresh = all(e.name != img.name for e in project.state.images)
        entry = project.entry(img.name, img.metadata.get("semimoe_path"))
        s.entry = entry  # the layers below are built at this entry's labels scale
        # The first image of a new project adopts layers it came with (the sample's tiles
        # and annotations); any other image starts from its own saved (or empty) work.
        adopt = fresh and len(project.state.images) == 1
        if fresh:  # big slides are annotated at the working scale, so painting stays fast
            H, W = self.layers.slide_shape()
            entry.labels_scale = 1.0 if H * W <= 64e6 else self.scale_spin.value()
            project.save()
        labels = self.layers.labels(create=True)
        saved = project.load_annotations(entry)
        if saved is not None:
            self.layers.replace_labels(saved)
        elif not adopt or labels.data.shape != self.layers.labels_shape():
            self.layers.replace_labels(np.zeros(self.layers.labels_shape(), np.uint16))
        self.layers.tiles(create=True)
        if adopt and not entry.tiles:
            s.sync_tiles()
        self.layers.show_tiles([rect(t.y, t.x, t.h, t.w) for t in entry.train_tiles()])
        s.set_entry(entry)
        self._show_unpainted()
        s.save_annotations()

    def refresh_layers(self, *_: Any) -> None:
        from napari.layers import Image

        current = self.image_combo.currentText()
        names = [
            ly.name
            for ly in self.viewer.layers
            if isinstance(ly, Image) and not ly.name.startswith(("Semi-MoE", "Expert"))
        ]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        self.image_combo.blockSignals(False)
        if self.image_combo.currentText() != current:
            self._switch_image()
        self._lock_without_project()
        for ly in self.viewer.layers:
            # Each layer is hooked once; the mark lives in its public metadata dict.
            if ly.name == LABELS_LAYER and not ly.metadata.get("semimoe_hooked"):
                ly.events.data.connect(self._schedule_save)
                if hasattr(ly.events, "paint"):
                    ly.events.paint.connect(self._schedule_save)
                ly.metadata["semimoe_hooked"] = True
            if ly.name == TILES_LAYER and not ly.metadata.get("semimoe_hooked"):
                ly.events.data.connect(self._tiles_edited)
                ly.events.highlight.connect(self._show_unpainted)  # the selection changed
                ly.metadata["semimoe_hooked"] = True

    # ------------------------------------------------------------------ saving

    def _schedule_save(self, *_: Any) -> None:
        """A stroke: save within the autosave interval of the FIRST unsaved change (restarting
        the timer on every stroke never saved a user who kept painting)."""
        if self.session.project is None:
            if not self._warned_unsaved:
                self._warned_unsaved = True
                msg = "Annotations are NOT saved: choose a project folder (1 · Project)"
                notify(msg, "warning")
            self.session.say(NO_PROJECT)
            return
        if not self._autosave.isActive():
            self._autosave.start()
        if self.session.training and not (
            self._pool_timer.isActive() and self._pool_timer.interval() == TILES_RECUT_MS
        ):
            self._pool_timer.start(PAINT_RECUT_MS)

    def _save_failed(self, msg: str) -> None:
        notify(f"Annotations NOT saved: {msg}", "error")
        self.session.say(f"annotations not saved: {msg}")

    def save_now(self) -> None:
        """Write the annotations before returning (napari closes, another project opens)."""
        self._autosave.stop()
        self.session.save_annotations(wait=True)

    def _on_removing(self, event) -> None:
        if self.viewer.layers[event.index] is self.layers.labels():
            self.save_now()

    # ------------------------------------------------------------------ tiles

    def _tiles_edited(self, *_: Any) -> None:
        self.session.sync_tiles()
        self._show_unpainted()

    def _refresh_pool(self) -> None:
        """The tiles changed: re-cut the unlabeled pool the trainer and the QA page use (once
        there is a training set), without waiting for the next Start."""
        project = self.session.project
        if project is None or not (project.root / TRAINSET_FILE).exists():
            return
        self.cutter.rebuild(quiet=True)

    def add_tile_at_center(self) -> None:
        """A training tile (one model tile at working scale) centred in the current view."""
        if self.layers.image() is None:
            notify("open a slide first", "warning")
            return
        if self.session.project is None:
            notify(NO_PROJECT, "warning")
            self.session.say(NO_PROJECT)
            return
        side = self.tile_spin.value() * self.scale_spin.value()
        cy, cx = np.asarray(camera(self.viewer).center[-2:]) / self.layers.base_scale()
        H, W = self.layers.slide_shape()
        y0 = float(np.clip(cy - side / 2, 0, max(0, H - side)))
        x0 = float(np.clip(cx - side / 2, 0, max(0, W - side)))
        self.layers.add_tile(rect(y0, x0, side, side))
        self.layers.labels(create=True)
        self.viewer.layers.selection.active = self.layers.labels()
