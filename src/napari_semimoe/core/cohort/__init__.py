"""Cohorts: many slides predicted on dask.distributed into OME-Zarr (Qt-free).

Entry point: :func:`run_cohort` (``run, slides, out, CohortOptions | client=, progress=,
stop=``) -> :class:`CohortSummary`. The stages and the tasks are in :mod:`.engine` and
:mod:`.blocks`, the output layout in :mod:`.layout`, the joining of glands across block
borders in :mod:`.labels`, the expansion of slide arguments in :mod:`.slides`; single-slide
``predict`` runs the same tasks in this process: :func:`predict_slide` (:mod:`.single`).
"""

from __future__ import annotations

from .engine import (
    CohortOptions,
    CohortProgress,
    CohortSummary,
    SlideResult,
    predict_in_process,
    run_cohort,
    start_client,
)
from .layout import SlidePlan, is_complete, level_shapes
from .single import predict_slide
from .slides import ZARR_SUFFIX, expand_slides, slide_name

__all__ = [
    "ZARR_SUFFIX",
    "CohortOptions",
    "CohortProgress",
    "CohortSummary",
    "SlidePlan",
    "SlideResult",
    "expand_slides",
    "is_complete",
    "level_shapes",
    "predict_in_process",
    "predict_slide",
    "run_cohort",
    "slide_name",
    "start_client",
]
