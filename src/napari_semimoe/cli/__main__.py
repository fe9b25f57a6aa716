"""``python -m napari_semimoe.cli``: the same as the ``napari-semimoe`` script."""

import sys

from .app import main

sys.exit(main())
