"""Screenshots of the flow of issue 19 under Xvfb: the real sample as the gui opens it, the
live preview mid-training, the prediction offered when training ends, and the export page.

xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/screenshots_flow.py [ITERS]
"""

from __future__ import annotations

import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> int:
    from gui_session import open_session

    OUT.mkdir(parents=True, exist_ok=True)
    viewer, widget, pump = open_session("semimoe-flow-", sample="real")
    pump(1)
    viewer.screenshot(str(OUT / "00-real-sample.png"), canvas_only=False)
    if "--sample-only" in sys.argv:
        viewer.close()
        return 0
    viewer.close()
    print("screenshots in", OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
