"""The background brush's colour in the annotations layer: the label id
:data:`~napari_semimoe.core.sparse.BACKGROUND_LABEL` drawn in one fixed colour (a light
grey no gland gets), every gland id exactly as the layer's own colormap draws it.

Self-contained on purpose (the layer styles are restyled elsewhere): call
:func:`show_background_label` on the annotations layer after any colormap change.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.sparse import BACKGROUND_LABEL

#: RGBA of painted background: light grey (reads as "nothing here"; never a gland colour,
#: and not the cyan of the model's outlines). Opaque: the layer's opacity applies.
BACKGROUND_COLOUR = (0.8, 0.8, 0.8, 1.0)
BACKGROUND_NAME = "background (painted)"
_MARK = "semimoe_background_colormap"  # the colormap this module made (metadata key)


def show_background_label(layer: Any) -> None:
    """Give the background brush's id its own colour in a Labels layer.

    napari's label colormaps cycle (id mod N), so no id can get a colour of its own; a
    colormap of 65,536 entries holding the layer's colour of every id 1..65,534 (the same
    cycle, spelled out) gives the last id, the background brush, a slot nobody shares.
    """
    from napari.utils.colormaps.colormap import CyclicLabelColormap

    cm = layer.colormap
    if not isinstance(cm, CyclicLabelColormap) or layer.metadata.get(_MARK) is cm:
        return
    colors = np.asarray(cm.map(np.arange(BACKGROUND_LABEL + 1, dtype=np.uint16)), np.float32)
    colors[0] = 0
    colors[BACKGROUND_LABEL] = BACKGROUND_COLOUR
    new = CyclicLabelColormap(colors=colors, background_value=0, seed=getattr(cm, "seed", 0.5))
    layer.colormap = new
    layer.metadata[_MARK] = layer.colormap
