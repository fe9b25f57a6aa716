"""How the plugin's layers look in napari, and the words that say what they show; shared by
the dock and the reader of the TIFFs that ``napari-semimoe predict`` writes, so a headless
prediction opens as the dock shows it.

Colour rules (a pathologist must tell at a glance what is whose):

- the user's annotations are filled in the warm/green colours of :data:`GLAND_PALETTE`
  (plus any :data:`SPECIAL_LABEL_COLORS`); the model's glands are outlined in
  :data:`PREDICTION_COLOR`, a colour no annotation ever has;
- the float maps are translucent, clear where they say "nothing" and coloured where they
  say something (no additive blending, which turned the pink slide magenta);
- every map layer carries a legend (:func:`legend_of`): its colours in words and one line
  saying what it shows.

Each model family's tasks declare their maps' styles and words
(:class:`~napari_semimoe.core.families.MapStyle`); this module turns them into napari
keyword arguments. Colours are plain data here: no Qt, napari imported only where a napari
colormap is built.
"""

from __future__ import annotations

from typing import Any

#: Outline colour of the model's glands (cyan): in no annotation colour, far from H&E pink.
PREDICTION_COLOR = "#00e5ff"
#: Colours of painted gland ids 1, 2, 3, ... (cycled): greens, yellows, oranges. No blue,
#: cyan or magenta: those belong to the model's outlines and to H&E's own colours.
GLAND_PALETTE = (
    "#3ddc4a",
    "#ffb000",
    "#a8e02c",
    "#ff7a1a",
    "#1fa34a",
    "#ffd84d",
    "#d7ff3a",
    "#e0691a",
    "#7bc96f",
    "#ffc266",
)
#: Annotation label ids with a colour of their own (e.g. a "background" brush label); an id
#: here is drawn in its colour and never in a gland colour. Extend it before the annotations
#: layer is made (or call :func:`style_annotations` again).
SPECIAL_LABEL_COLORS: dict[int, str] = {}
#: Colours of the tasks / experts, in the family's task order (Semi-MoE: segmentation,
#: distance map, boundary): the loss chart's curves and the expert-weight bars.
TASK_COLORS = ("#e8a33d", "#4cb5f5", "#b05cd6", "#f5d547", "#5ad1c8", "#e86d9e")

#: The annotations layer: filled, half-transparent, so the tissue shows through.
ANNOTATION_OPACITY = 0.55
#: How each predicted label map is drawn in the dock: outlines (``contour`` px at working
#: scale); ``filled_opacity``: where no outline can be asked for (a reader's layer data).
LABEL_STYLES: dict[str, dict[str, Any]] = {
    "instances": {"opacity": 1.0, "contour": 1, "filled_opacity": 0.4},
    "mask": {"opacity": 1.0, "contour": 1, "filled_opacity": 0.35},
}
#: The label maps' opacity in the reader, which sets no colours (kept as it was).
LABEL_OPACITY = {"instances": 0.6, "mask": 0.5}

#: Alpha-ramp colormaps: (position, RGBA) controls; clear at "nothing", opaque at "much".
RAMPS: dict[str, tuple[tuple[float, tuple[float, float, float, float]], ...]] = {
    # gland probability: clear -> pale cyan (undecided) -> deep blue (surely gland)
    "semimoe-prob": (
        (0.0, (0.0, 0.9, 1.0, 0.0)),
        (0.5, (0.3, 0.85, 1.0, 0.35)),
        (1.0, (0.0, 0.25, 0.95, 0.85)),
    ),
    # gland edge: clear -> bright green
    "semimoe-boundary": (
        (0.0, (0.1, 1.0, 0.3, 0.0)),
        (0.5, (0.1, 1.0, 0.3, 0.5)),
        (1.0, (0.0, 0.85, 0.2, 0.95)),
    ),
    # uncertainty: clear (sure) -> yellow -> red (unsure: look here)
    "semimoe-uncertainty": (
        (0.0, (1.0, 0.9, 0.0, 0.0)),
        (0.15, (1.0, 0.9, 0.0, 0.35)),
        (0.5, (1.0, 0.5, 0.0, 0.6)),
        (1.0, (0.9, 0.0, 0.0, 0.75)),  # the tissue still shows under the reddest
    ),
    # signed distance: blue outside, white edge, red inside (translucent throughout)
    "semimoe-sdf": (
        (0.0, (0.13, 0.40, 0.67, 0.65)),
        (0.5, (0.97, 0.97, 0.97, 0.85)),
        (1.0, (0.70, 0.09, 0.17, 0.75)),
    ),
}


def ramp_colormap(name: str):
    """A napari colormap of :data:`RAMPS` (RGBA: its alpha is the layer's see-through)."""
    from napari.utils import Colormap

    controls = RAMPS[name]
    return Colormap([list(c) for _, c in controls], controls=[p for p, _ in controls], name=name)


def sdf_colormap():
    """Diverging map centred on 0 (the gland edge): blue outside, white edge, red inside."""
    return ramp_colormap("semimoe-sdf")


#: Float maps that belong to no model family (the review and suggestion pages' uncertainty).
EXTRA_STYLES = {
    "uncertainty": {
        "colormap": "semimoe-uncertainty",
        "contrast_limits": (0.0, 0.6),
        "blending": "translucent",
    }
}
#: The words of the maps of :data:`EXTRA_STYLES` (as a family's MapStyle says them).
EXTRA_WORDS = {
    "uncertainty": {
        "low": "sure",
        "mid": "",
        "high": "unsure: check here",
        "help": "Where the model is unsure of its glands: clear = sure, yellow to red = "
        "unsure; look at the red places first and correct them (uncertainty: the entropy "
        "of the gland probability and the gate-vs-expert disagreement).",
    }
}


def map_style(key: str) -> dict[str, Any]:
    """Image-layer keyword arguments for a float map, from the style its task declares
    (:class:`~napari_semimoe.core.families.MapStyle`); an unknown map: viridis, translucent."""
    from ..core.families import MapStyle, output_styles

    if key in EXTRA_STYLES:
        kw = dict(EXTRA_STYLES[key])
    else:
        kw = output_styles().get(key, _class_prob_style(key) or MapStyle()).to_kwargs()
    if kw["colormap"] in RAMPS:
        kw["colormap"] = ramp_colormap(kw["colormap"])
    return kw


def _class_prob_style(key: str):
    """``prob_<k>`` of a model whose classes are not known here (a file opened alone):
    class k's probability in the gland probability's ramp; None for any other key."""
    head, _, k = key.rpartition("_")
    if head != "prob" or not k.isdigit():
        return None
    from ..core.families import MapStyle

    name = f"class {int(k)}"
    return MapStyle(
        "semimoe-prob",
        low=f"not {name}",
        high=name,
        help=f"How sure the model is that each pixel is {name} (its class probability).",
    )


def map_words(key: str) -> dict[str, str]:
    """What a map's colours mean, in words: ``low``, ``mid``, ``high`` ends and a ``help``
    line (from the family's MapStyle; plain defaults for a map nobody described)."""
    from ..core.families import MapStyle, output_styles

    if key in EXTRA_WORDS:
        return dict(EXTRA_WORDS[key])
    st = output_styles().get(key, _class_prob_style(key) or MapStyle())
    return {
        "low": st.low or "low",
        "mid": st.mid,
        "high": st.high or "high",
        "help": st.help or f"the model's '{key}' map",
    }


def label_style(key: str, filled: bool = False) -> dict[str, Any]:
    """``add_labels`` keyword arguments of a predicted label map (``instances``, ``mask``):
    every object in :data:`PREDICTION_COLOR`; :func:`outline` then draws them as outlines
    (napari takes ``contour`` only as a layer property). ``filled``: see-through filled
    objects instead, for layer data that cannot set the outline (a reader)."""
    from napari.utils.colormaps import DirectLabelColormap

    cmap = DirectLabelColormap(color_dict={0: (0, 0, 0, 0), None: PREDICTION_COLOR})
    st = LABEL_STYLES[key]
    return {"opacity": st["filled_opacity" if filled else "opacity"], "colormap": cmap}


def outline(layer, key: str) -> None:
    """Draw a predicted label layer as outlines, with its legend."""
    layer.contour = LABEL_STYLES[key]["contour"]
    layer.metadata[LEGEND] = legend_of(
        "outline", key, items=[(PREDICTION_COLOR, "the model's glands")]
    )


def annotation_colors(n: int | None = None) -> list[str]:
    """The annotations' colour of every label id 0..N-1 (0: clear): the gland palette
    cycled, the special ids in theirs. N covers every special id."""
    top = max([len(GLAND_PALETTE), *SPECIAL_LABEL_COLORS]) + 1
    n = max(n or 0, top)
    out = ["#00000000"]
    for i in range(1, n):
        out.append(SPECIAL_LABEL_COLORS.get(i, GLAND_PALETTE[(i - 1) % len(GLAND_PALETTE)]))
    return out


def annotation_colormap():
    """napari colormap of the annotations layer (see :func:`annotation_colors`)."""
    from napari.utils.colormaps import CyclicLabelColormap

    return CyclicLabelColormap(colors=annotation_colors(), name="semimoe-annotations")


def is_annotation_color(color) -> bool:
    """True when ``color`` (any napari colour) is one an annotation may be drawn in."""
    import numpy as np
    from napari.utils.colormaps.standardize_color import transform_color

    c = transform_color(color)[0][:3]
    return any(
        np.allclose(c, transform_color(a)[0][:3], atol=0.02) for a in annotation_colors()[1:]
    )


#: One line per layer kind: "what am I looking at" (the legend and the layer's metadata).
HELP = {
    "annotations": "Your painting: what the model learns from (filled colours, one per gland). "
    "Paint glands with the brush; different colours for touching glands.",
    "training tiles": "Training tiles (yellow boxes): the model learns from what you painted "
    "inside them; everything else is unlabeled tissue it also learns from.",
    "instances": "The model's glands (cyan outlines): where it predicts a gland, each one "
    "outlined; touching glands are split. Compare with your painting and correct it.",
    "mask": "The model's gland mask (cyan outlines).",
    "preview": "Live preview (white outlines): the glands the model being trained finds in "
    "this view, refreshed at each checkpoint; it goes when training ends.",
    "gates": "How much each expert of the model counts in each tile (expert weights, the "
    "'gates' of Semi-MoE); longer bar = trusted more.",
}


def experts_words(family: Any) -> tuple[str, str]:
    """The review page's "experts" box in the model's words (text, tooltip): DCA's are its
    head / medium / tail decoders and its fusion's attention to each."""
    if not family.output_maps(True):
        return "also show each expert's outputs", (
            f"this model ({family.label or family.name}) has no experts"
        )
    if family.name == "dca":
        return "also show the decoders and attention", (
            "DCA's head / medium / tail expert decoders, and where its fusion (DFAM) listens "
            "to each"
        )
    return "also show each expert's outputs", ""


def legend_of(kind: str, key: str = "", **extra: Any) -> dict[str, Any]:
    """The legend a layer carries in ``metadata[LEGEND]``: ``kind`` is ``map`` (a colour
    bar with words at its ends), ``swatches`` (colour -> words) or ``outline``."""
    if kind == "map":
        return {"kind": "map", **map_words(key), **extra}
    return {"kind": kind, "help": HELP.get(key, ""), **extra}


#: Metadata key of a layer's legend.
LEGEND = "semimoe_legend"


def annotation_legend() -> dict[str, Any]:
    items = [(c, "your glands" if i == 0 else "") for i, c in enumerate(GLAND_PALETTE[:4])]
    items += [(c, f"label {i}") for i, c in SPECIAL_LABEL_COLORS.items()]
    from .background_label import BACKGROUND_COLOUR, BACKGROUND_NAME

    items.append(
        ("#" + "".join(f"{round(255 * v):02x}" for v in BACKGROUND_COLOUR[:3]), BACKGROUND_NAME)
    )
    return legend_of("swatches", "annotations", items=items)


def style_annotations(layer) -> None:
    """Give the annotations layer its colours and legend (whoever made the layer)."""
    layer.colormap = annotation_colormap()
    layer.opacity = ANNOTATION_OPACITY
    layer.metadata[LEGEND] = annotation_legend()


def prediction_keys() -> tuple[str, ...]:
    """Every map name a prediction writes as NAME_<key>.tif (every family's), longest first
    so that ``expert_prob`` is matched before ``prob``."""
    from ..core.families import output_styles

    return tuple(sorted({*output_styles(), *LABEL_STYLES}, key=lambda k: (-len(k), k)))
