"""User-facing errors: one readable line, shown by the CLI and the plugin without a traceback."""


class InputError(ValueError):
    """Bad input from the user (file, mask, annotation, setting); the message says what to fix."""


class CheckpointError(InputError):
    """A run folder or checkpoint is missing, incomplete or from an incompatible version."""


def plural(n: int, word: str) -> str:
    """``plural(1, "image")`` -> "1 image", ``plural(3, "image")`` -> "3 images"."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def some(names: list[str], k: int = 5) -> str:
    """The first ``k`` names, comma-separated, "..." when there are more (one-line messages)."""
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")
