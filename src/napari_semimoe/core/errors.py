"""User-facing errors: one readable line, shown by the CLI and the plugin without a traceback."""


class InputError(ValueError):
    """Bad input from the user (file, mask, annotation, setting); the message says what to fix."""


class CheckpointError(InputError):
    """A run folder or checkpoint is missing, incomplete or from an incompatible version."""
