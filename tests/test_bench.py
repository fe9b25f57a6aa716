"""`napari-semimoe bench` reports the documented keys, measured in one run."""

from __future__ import annotations

import json

import pytest

from napari_semimoe.cli import main


@pytest.mark.slow
def test_bench_json_keys(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert (
        main(["bench", "--width", "4", "--repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    )
    r = json.loads(out.read_text())
    for key in (
        "train_iteration_s",
        "train_iteration_reference_s",
        "predict_mpx_per_s",
        "predict_reference_mpx_per_s",
        "train_speedup",
        "predict_speedup",
    ):
        assert r[key] > 0, key
    assert r["train_speedup"] == pytest.approx(
        r["train_iteration_reference_s"] / r["train_iteration_s"], rel=0.02
    )
    assert r["halves_side_by_side"] is False  # one thread: the halves run in sequence
    # the ratio depends on the CPU's bf16 units: the JSON says which it had
    assert r["cpu"] and "amx" in r and "avx512_bf16" in r
