"""Where a training runs: "this computer" or "cluster" (a dask scheduler's address, trained on
a worker with the GPU resource; see :mod:`napari_semimoe.core.remote`). A widget of its own
so that the Train page only places it and asks it :meth:`WhereBox.scheduler`."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QLineEdit, QWidget

from ..core.errors import InputError

THIS_COMPUTER = "this computer"
CLUSTER = "cluster"


class WhereBox(QWidget):
    """Where: [this computer | cluster] [tcp://host:8786]. The address is asked only for a
    cluster; the project remembers neither (a cluster's address changes between sessions)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Where"))
        self.combo = QComboBox()
        self.combo.addItems([THIS_COMPUTER, CLUSTER])
        self.combo.setToolTip(
            "this computer: train here, in a background process. cluster: train on a dask "
            "worker that has the GPU resource (started with `dask worker ADDRESS --resources "
            "GPU=1`); progress, Pause and Stop work the same and every checkpoint comes home "
            "into the project's run folder"
        )
        row.addWidget(self.combo)
        self.address = QLineEdit()
        self.address.setPlaceholderText("scheduler address, e.g. tcp://gpu-server:8786")
        row.addWidget(self.address, 1)
        self.combo.currentTextChanged.connect(self._changed)
        self._changed(self.combo.currentText())

    def _changed(self, text: str) -> None:
        self.address.setVisible(text == CLUSTER)

    def use_cluster(self, address: str) -> None:
        """Choose the cluster at ``address`` (tests, a remembered address)."""
        self.combo.setCurrentText(CLUSTER)
        self.address.setText(address)

    def scheduler(self) -> str | None:
        """The scheduler's address for a cluster, None for this computer; a cluster without
        an address is a one-line InputError."""
        if self.combo.currentText() != CLUSTER:
            return None
        address = self.address.text().strip()
        if not address:
            raise InputError("give the cluster's scheduler address (e.g. tcp://gpu-server:8786)")
        return address
