"""Qt-free core of napari-semimoe: model, targets, losses, training, prediction, metrics, I/O.

Nothing under ``core`` imports Qt or napari, so the CLI, the plugin and scripts share it.
"""
