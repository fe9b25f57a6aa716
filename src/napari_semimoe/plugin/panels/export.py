"""Page 6 · Export: the prediction or the annotations of the current image, at the slide's
native resolution, as instance outlines for QuPath (GeoJSON), class map + instance TIFFs,
or OME-Zarr (:mod:`...core.export`), written in a worker thread with progress and Cancel.

The label map is copied on the GUI thread (a few ms); everything else runs in the thread.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ...core.errors import InputError
from ..common import notify
from ..jobs import ProgressJob
from ..layers import NapariLayers
from ..session import Session

SOURCES = ("the model's prediction", "my annotations")
#: (checkbox text, core.export format, checked by default)
FORMAT_BOXES = (
    ("gland outlines for QuPath (GeoJSON)", "geojson", True),
    ("class map + instances as TIFF", "tiff", True),
    ("class map + instances as OME-Zarr", "ome-zarr", False),
)


def safe_stem(name: str) -> str:
    """A file-name stem from a layer name ('EBHI-Seg colon biopsies' -> 'EBHI-Seg_colon_...')."""
    stem = re.sub(r"[^\w.-]+", "_", Path(name).stem if "." in name else name).strip("._")
    return stem or "image"


class ExportPanel(QWidget):
    def __init__(self, session: Session, layers: NapariLayers) -> None:
        super().__init__()
        self.session, self.layers = session, layers
        self.viewer = layers.viewer
        self.worker = None
        self.written: list[Path] = []
        self._build()
        session.project_changed.connect(self._project_opened)

    def _build(self) -> None:
        v = QVBoxLayout(self)
        f = QFormLayout()
        self.source_combo = QComboBox()
        self.source_combo.addItems(SOURCES)
        self.source_combo.setToolTip(
            "the glands the model predicted (3 · Review), or the glands you painted"
        )
        f.addRow("Export", self.source_combo)
        row = QHBoxLayout()
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("a folder (the project's exports/ by default)")
        browse = QPushButton("…")
        browse.setToolTip("choose the folder the files go to")
        browse.clicked.connect(self._browse)
        row.addWidget(self.folder_edit, 1)
        row.addWidget(browse)
        f.addRow("To folder", row)
        v.addLayout(f)
        self.format_checks: dict[str, QCheckBox] = {}
        for text, fmt, on in FORMAT_BOXES:
            box = QCheckBox(text)
            box.setChecked(on)
            self.format_checks[fmt] = box
            v.addWidget(box)
        self.format_checks["geojson"].setToolTip(
            "one polygon per gland (holes kept), in the slide's pixel coordinates at full "
            "resolution: File › Import objects in QuPath; predictions come in as detections, "
            "your annotations as annotations, classified 'Gland'"
        )
        self.format_checks["tiff"].setToolTip(
            "NAME_mask.tif (0 background, 1 gland) and NAME_instances.tif (one id per gland), "
            "at the slide's full size"
        )
        self.format_checks["ome-zarr"].setToolTip(
            "the same two maps as OME-Zarr (multiscale), for napari, QuPath (Bio-Formats) or "
            "a cohort analysis"
        )
        brow = QHBoxLayout()
        self.export_btn = QPushButton("Export")
        self.export_btn.clicked.connect(self.export)
        self.progress = QProgressBar()
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancel)
        brow.addWidget(self.export_btn)
        brow.addWidget(self.progress, 1)
        brow.addWidget(self.cancel_btn)
        v.addLayout(brow)
        self.result_label = QLabel("")
        self.result_label.setWordWrap(True)
        self.result_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        v.addWidget(self.result_label)
        v.addStretch(1)
        self._job: ProgressJob | None = None

    def _project_opened(self, project) -> None:
        self.folder_edit.setText(str(project.root / "exports"))

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Export to folder", self.folder_edit.text())
        if d:
            self.folder_edit.setText(d)

    # ------------------------------------------------------------------ what to export

    def formats(self) -> tuple[str, ...]:
        return tuple(f for f, box in self.format_checks.items() if box.isChecked())

    def _prediction_layer(self):
        from ...core.families import families, get_family

        fam = self.session.family
        names = (
            [fam.layer_names()["instances"]]
            if fam is not None
            else [get_family(n).layer_names()["instances"] for n in families()]
        )
        return next((self.viewer.layers[n] for n in names if n in self.viewer.layers), None)

    def _source(self) -> tuple[np.ndarray, str, str]:
        """(label map, object type, file-name suffix), or a one-line InputError."""
        if self.source_combo.currentIndex() == 0:
            layer = self._prediction_layer()
            if layer is None:
                raise InputError("no prediction to export yet: predict in 3 · Review first")
            return np.array(layer.data), "detection", "prediction"
        layer = self.layers.labels()
        if layer is None:
            raise InputError("no annotations to export: paint glands first")
        return np.array(layer.data), "annotation", "annotations"

    # ------------------------------------------------------------------ run

    @property
    def busy(self) -> bool:
        return self.worker is not None and self._job is not None and self.cancel_btn.isEnabled()

    def export(self) -> None:
        from napari.qt.threading import thread_worker

        from ...core.export import ExportCancelled, export_labels

        try:
            if self.layers.image() is None:
                raise InputError("no image: open a slide first")
            formats = self.formats()
            if not formats:
                raise InputError("tick at least one format to export")
            folder = self.folder_edit.text().strip()
            if not folder:
                raise InputError("choose a folder to export to")
            labels, object_type, what = self._source()
            if not labels.any():
                raise InputError(f"nothing to export: {what} has no gland")
            shape = self.layers.slide_shape()
            mpp = self.layers.image().metadata.get("mpp")
        except InputError as exc:
            notify(str(exc), "warning")
            self.session.say(str(exc))
            return
        stem = f"{safe_stem(self.layers.image().name)}_{what}"
        job = self._job = ProgressJob(self.progress, self.cancel_btn, self, unit="steps")

        @thread_worker(ignore_errors=True)
        def work():
            try:
                return export_labels(
                    labels,
                    shape,
                    Path(folder).expanduser(),
                    stem,
                    formats,
                    object_type=object_type,
                    mpp=mpp,
                    progress=job.progress,
                    cancel=lambda: job.cancelled,
                )
            except ExportCancelled:
                return None

        worker = self.worker = work()
        self.export_btn.setEnabled(False)
        self.result_label.setText("exporting…")
        job.start()

        def finished() -> None:
            job.finish()
            self.export_btn.setEnabled(True)

        worker.returned.connect(self._done)
        worker.errored.connect(self._failed)
        worker.finished.connect(finished)
        worker.start()

    def _done(self, paths: list[Path] | None) -> None:
        if paths is None:
            self.result_label.setText("export cancelled")
            self.session.say("export cancelled")
            return
        self.written = list(paths)
        folder = paths[0].parent if paths else ""
        names = "\n".join(f"• {p.name}" for p in paths)
        self.result_label.setText(f"exported to {folder}:\n{names}")
        self.session.say(f"exported {len(paths)} file(s) to {folder}")

    def _failed(self, exc: BaseException) -> None:
        self.result_label.setText("export failed")
        notify(self.session.report("export", exc), "error")

    def cancel(self) -> None:
        if self._job is not None:
            self._job.cancel()
