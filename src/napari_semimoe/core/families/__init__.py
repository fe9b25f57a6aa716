"""Model families by name: a family builds its network and says what its tasks are.

``register_family(MyFamily())`` makes a family usable by the trainer, the predictor, the
checkpoint loader, ``summary`` and the viewer; checkpoints name their family, and old ones
without a name are ``semimoe``.
"""

from __future__ import annotations

from ..errors import InputError
from .base import Family, Inference, MapStyle, Task, softmax_foreground, tanh_map

#: The family of checkpoints that name none (everything saved before families existed).
DEFAULT_FAMILY = "semimoe"

_REGISTRY: dict[str, Family] = {}


def register_family(family: Family, *, replace: bool = False) -> Family:
    """Make ``family`` known by its name; a second family of the same name is refused
    unless ``replace``."""
    if not family.name or not family.tasks:
        raise ValueError("a family needs a name and at least one task")
    if family.name in _REGISTRY and not replace and _REGISTRY[family.name] is not family:
        raise ValueError(f"a model family named {family.name!r} is registered already")
    _REGISTRY[family.name] = family
    return family


def unregister_family(name: str) -> None:
    """Forget a family (tests); the built-in ``semimoe`` and ``dca`` stay."""
    if name not in (DEFAULT_FAMILY, "dca"):
        _REGISTRY.pop(name, None)


def families() -> tuple[str, ...]:
    """Names of the known families, the default first."""
    return tuple(sorted(_REGISTRY, key=lambda n: (n != DEFAULT_FAMILY, n)))


def get_family(name: str | None = None) -> Family:
    """The family called ``name`` (None: the default); an unknown name is one line that
    lists the known ones."""
    name = DEFAULT_FAMILY if name is None else name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(f"unknown model family {name!r}; known: {', '.join(families())}") from None


def output_styles() -> dict[str, MapStyle]:
    """Every known family's output maps and their display styles."""
    styles: dict[str, MapStyle] = {}
    for n in families():
        styles.update(_REGISTRY[n].styles())
    return styles


from .dca import DCAFamily  # noqa: E402
from .semimoe import SemiMoEFamily  # noqa: E402  (registers the built-in families)

register_family(SemiMoEFamily())
register_family(DCAFamily())

from .moek import MoEKFamily  # noqa: E402

register_family(MoEKFamily())

__all__ = [
    "DEFAULT_FAMILY",
    "Family",
    "Inference",
    "MapStyle",
    "Task",
    "families",
    "get_family",
    "output_styles",
    "register_family",
    "softmax_foreground",
    "tanh_map",
    "unregister_family",
]
