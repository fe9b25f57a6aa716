"""The cohort's LocalCluster and the environment: dask's nanny must not leave its
pre-spawn variables in this process (a later training child would run on one thread), and
workers must not run with glibc's adaptive mmap threshold off (1.7-1.9x slower network)."""

import os
import subprocess
import sys

KEYS = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def test_local_cluster_leaves_this_process_alone_and_gives_workers_their_limits(monkeypatch):
    from napari_semimoe.core.cohort import CohortOptions, start_client

    for k in KEYS:
        monkeypatch.delenv(k, raising=False)
    client, cluster = start_client(CohortOptions(workers=1, dashboard_address=":0"))
    try:
        seen = list(client.run(lambda: {k: os.environ.get(k) for k in KEYS}).values())
    finally:
        client.close()
        cluster.close()
    assert {k: os.environ.get(k) for k in KEYS} == dict.fromkeys(KEYS)  # untouched here
    assert seen == [
        {
            "MALLOC_TRIM_THRESHOLD_": None,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
        }
    ]


def _adaptive(env: dict) -> str:
    code = "from napari_semimoe.core.device import adaptive_malloc; print(adaptive_malloc())"
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_adaptive_malloc_only_where_the_environment_turned_it_off():
    if not sys.platform.startswith("linux"):
        return
    assert _adaptive({"MALLOC_TRIM_THRESHOLD_": "65536"}) == "True"  # as dask's workers
    assert _adaptive({}) == "False"
    both = {"MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_MMAP_THRESHOLD_": "131072"}
    assert _adaptive(both) == "False"  # the user's own choice stays
