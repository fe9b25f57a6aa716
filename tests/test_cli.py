"""The command line end to end on generated data, and its one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_semimoe.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_summary_counts(capsys):
    code, out, _ = run(capsys, "summary", "--width", "64")
    assert code == 0 and json.loads(out)["total"] == 103_665_974
    code, out, _ = run(capsys, "summary")
    assert json.loads(out)["total"] == 6_492_062


def test_train_predict_evaluate_resume(tiny_dataset: Path, tmp_path: Path, capsys):
    rundir = tmp_path / "run"
    common = ["--width", "4", "--input-size", "32", "--threads", "1", "--precision", "fp32"]
    code, out, err = run(
        capsys,
        "train",
        "--data",
        str(tiny_dataset),
        "--labeled",
        "2",
        "--iterations",
        "3",
        "--out",
        str(rundir),
        *common,
    )
    assert code == 0, err
    assert json.loads(out)["iterations"] == 3  # stdout is the result's JSON, nothing else
    split = json.loads((rundir / "split.json").read_text())
    assert len(split["labeled"]) == 2 and len(split["unlabeled"]) == 4
    assert not set(split["labeled"]) & set(split["unlabeled"])

    # Resume continues the same run to more iterations.
    code, out, err = run(capsys, "train", "--resume", str(rundir), "--iterations", "5")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["iterations"] == 5
    hist = json.loads((rundir / "history.json").read_text())
    assert [h["iteration"] for h in hist] == [1, 2, 3, 4, 5]

    img = tiny_dataset / "images" / "img_0.png"
    code, out, err = run(capsys, "predict", str(rundir), str(img), "--out", str(tmp_path / "p"))
    assert code == 0, err
    mask = tifffile.imread(tmp_path / "p" / "img_0_mask.tif")
    assert mask.shape == (96, 80) and mask.dtype == np.uint8 and mask.max() <= 1
    for key in ("prob", "sdf", "boundary"):
        a = tifffile.imread(tmp_path / "p" / f"img_0_{key}.tif")
        assert a.shape == (96, 80) and a.dtype == np.float32, key
    assert tifffile.imread(tmp_path / "p" / "img_0_instances.tif").shape == (96, 80)

    code, out, err = run(
        capsys,
        "evaluate",
        str(rundir),
        "--data",
        str(tiny_dataset),
        "--json",
        str(tmp_path / "m.json"),
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n_images"] == 4 and 0 <= metrics["dice_pooled"] <= 1
    assert "Object F1" in out


def _train(capsys, data, out, *extra):
    return run(
        capsys,
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--width",
        "4",
        "--input-size",
        "32",
        "--threads",
        "1",
        *extra,
    )


def test_resume_needs_only_the_run_folder_every_time(tiny_dataset, tmp_path, capsys, monkeypatch):
    rundir = tmp_path / "run"
    code, _, err = _train(capsys, tiny_dataset, rundir, "--labeled", "2", "--iterations", "2")
    assert code == 0, err
    monkeypatch.chdir(tmp_path)  # elsewhere: the data folder must come from the run
    for total in (3, 4):  # twice: the first resume must keep the data folder recorded
        code, out, err = run(capsys, "train", "--resume", str(rundir), "--iterations", str(total))
        assert code == 0, err
        assert json.loads(out)["iterations"] == total
    # A resumed run keeps its settings: changing one is refused, not ignored.
    code, _, err = run(
        capsys, "train", "--resume", str(rundir), "--iterations", "6", "--width", "8"
    )
    assert code == 2 and "--width" in err and "resumed run keeps" in err
    code, _, err = run(capsys, "train", "--resume", str(rundir), "--iterations", "4")
    assert code == 2 and "already trained 4 iterations" in err
    code, _, err = run(capsys, "train", "--resume", str(rundir))  # its own total, reached
    assert code == 2 and "give --iterations > 4" in err


def _stderr_lines(err: str) -> list[str]:
    """stderr's lines other than the progress bars'."""
    lines = err.replace("\r", "\n").splitlines()
    return [ln for ln in lines if ln.startswith("napari-semimoe")]


@pytest.mark.parametrize(
    ("damaged", "text"),
    [
        ("split.json", '{"labeled": ["img'),  # cut by a full disk
        ("split.json", '{"labeled": [1, [2]], "unlabeled": 3}'),  # wrong types
        ("config.json", '{"width": 4, "geom'),
        ("config.json", '{"width": "x", "geometry": {"tile": "big"}}'),
    ],
)
def test_resume_recovers_damaged_run_json_from_the_checkpoint(
    tiny_dataset, tmp_path, capsys, damaged, text
):
    """A damaged split.json or config.json next to a good checkpoint: the resume says in one
    line which file is damaged and where its facts were recovered from, and trains the same
    run (bit for bit) as with the files intact."""
    from napari_semimoe.core.checkpoint import read_checkpoint

    first = tmp_path / "a"
    code, _, err = _train(capsys, tiny_dataset, first, "--labeled", "2", "--iterations", "2")
    assert code == 0, err
    second = tmp_path / "b"
    shutil.copytree(first, second)
    code, _, err = run(capsys, "train", "--resume", str(first), "--iterations", "3")
    assert code == 0, err
    (second / damaged).write_text(text)
    code, _, err = run(
        capsys, "train", "--resume", str(second), "--iterations", "3", "--data", str(tiny_dataset)
    )
    assert code == 0, err
    assert "Traceback" not in err
    [line] = _stderr_lines(err)
    assert line.startswith(f"napari-semimoe train: warning: {second / damaged} is damaged (")
    assert "read from the checkpoint" in line or "read from its checkpoint" in line
    a, b = read_checkpoint(first)[0], read_checkpoint(second)[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((second / damaged).read_text()) == json.loads((first / damaged).read_text())


def test_resume_with_damaged_config_and_no_data_folder_is_one_line(tiny_dataset, tmp_path, capsys):
    rundir = tmp_path / "run"
    code, _, err = _train(capsys, tiny_dataset, rundir, "--labeled", "2", "--iterations", "2")
    assert code == 0, err
    (rundir / "config.json").write_text("[]")
    code, out, err = run(capsys, "train", "--resume", str(rundir), "--iterations", "3")
    assert code == 2 and out == "" and "Traceback" not in err
    warning, error = _stderr_lines(err)
    assert "config.json is damaged (not a JSON object)" in warning
    assert error == (
        f"napari-semimoe train: error: {rundir}: config.json is damaged and the run does not "
        "say where its data is; give --data DIR"
    )


def test_a_run_that_never_started_is_not_half_made(tiny_dataset, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tiny_dataset / "masks" / "img_1.png")
    rundir = tmp_path / "run"
    code, _, err = _train(capsys, tiny_dataset, rundir, "--labeled", "4", "--iterations", "1")
    assert code == 2 and "img_1.png" in err
    assert not (rundir / "split.json").exists()  # nothing to resume from a failed start
    # a folder left by an older version (split but no checkpoint) gets a clear message
    rundir.mkdir(exist_ok=True)
    (rundir / "split.json").write_text('{"labeled": [], "unlabeled": []}')
    code, _, err = run(capsys, "train", "--resume", str(rundir), "--iterations", "2")
    assert code == 2 and "never saved a checkpoint" in err and "Traceback" not in err


def test_predict_names_and_evaluate_reports_unmasked_images(tiny_dataset, tmp_path, capsys):
    import shutil

    rundir = tmp_path / "run"
    code, _, err = _train(capsys, tiny_dataset, rundir, "--labeled", "2", "--iterations", "1")
    assert code == 0, err
    src = tiny_dataset / "images" / "img_0.png"
    for name in ("case.v1.png", "case.v2.png", "slide.ome.tif"):
        if name.endswith(".tif"):
            from PIL import Image

            tifffile.imwrite(tmp_path / name, np.asarray(Image.open(src).convert("RGB")))
        else:
            shutil.copy(src, tmp_path / name)
    imgs = [str(tmp_path / n) for n in ("case.v1.png", "case.v2.png", "slide.ome.tif")]
    code, out, err = run(capsys, "predict", str(rundir), *imgs, "--out", str(tmp_path / "p"))
    assert code == 0, err
    for stem in ("case.v1", "case.v2", "slide"):  # the file type goes, the rest of the name stays
        assert (tmp_path / "p" / f"{stem}_mask.tif").exists(), stem
        assert (tmp_path / "p" / f"{stem}_gates.npz").exists(), stem
    listed = [json.loads(line)["outputs"] for line in out.strip().splitlines()]
    assert all("gates" in o for o in listed)

    code, out, err = run(capsys, "evaluate", str(rundir), "--data", str(tiny_dataset))
    assert code == 0, err
    assert "2 images without a mask not evaluated: img_4, img_5" in err


def test_suggest_on_a_whole_image_model(tiny_dataset, tmp_path, capsys):
    """A model trained on whole images resized to N x N suggests regions inside an image,
    as boxes (y, x, h, w) in the image's pixels, inside the image."""
    rundir = tmp_path / "run"
    code, _, err = _train(capsys, tiny_dataset, rundir, "--labeled", "2", "--iterations", "1")
    assert code == 0, err
    img = tiny_dataset / "images" / "img_0.png"  # 96 x 80, resized to 32 x 32 for the model
    code, out, err = run(capsys, "suggest", str(rundir), str(img), "--top", "2")
    assert code == 0, err
    tiles = json.loads(out)["tiles"]
    assert tiles, err
    for t in tiles:
        assert t["h"] == 48 and t["w"] == 40  # 16 px (the least) of 32, scaled 3x and 2.5x
        assert t["y"] >= 0 and t["y"] + t["h"] <= 96 and t["x"] >= 0 and t["x"] + t["w"] <= 80


def test_refuses_to_overwrite_a_run(tiny_dataset, tmp_path, capsys):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoint.safetensors").write_bytes(b"x")
    code, _, err = run(
        capsys,
        "train",
        "--data",
        str(tiny_dataset),
        "--iterations",
        "1",
        "--out",
        str(tmp_path / "r"),
    )
    assert code == 2 and "already holds a run" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "/nonexistent", "--iterations", "1"], "no such folder"),
        (["train", "--data", "{data}", "--iterations", "1", "--labeled", "9"], "only 4 have masks"),
        (["predict", "/nonexistent-run", "x.png", "--out", "o"], "no such run folder"),
        (["train", "--data", "{data}"], "--iterations"),
        (["summary", "--width", "0"], "--width must be an even integer"),
        (["summary", "--width", "7"], "--width must be an even integer"),
        (["train", "--data", "{data}", "--iterations", "1", "--width", "3"], "--width"),
        (["train", "--data", "{data}", "--iterations", "1", "--threads", "0"], "--threads"),
        (["predict", "r", "a.png", "b/a.png", "--out", "o"], "would both write a_*.tif"),
        (["train", "--resume", "/nonexistent-run", "--iterations", "2"], "no such run folder"),
    ],
)
def test_user_errors_are_one_line(tiny_dataset, capsys, args, message):
    args = [a.replace("{data}", str(tiny_dataset)) for a in args]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_mask_size_mismatch_is_reported(tiny_dataset, tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tiny_dataset / "masks" / "img_1.png")
    code, _, err = run(
        capsys,
        "train",
        "--data",
        str(tiny_dataset),
        "--labeled",
        "4",
        "--iterations",
        "1",
        "--out",
        str(tmp_path / "r"),
    )
    assert code == 2 and "img_1.png" in err and "10x10" in err


def test_corrupt_image_in_predict(tiny_dataset, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    rundir = tmp_path / "run"
    run(
        capsys,
        "train",
        "--data",
        str(tiny_dataset),
        "--labeled",
        "1",
        "--iterations",
        "1",
        "--out",
        str(rundir),
        "--width",
        "4",
        "--input-size",
        "32",
    )
    code, _, err = run(capsys, "predict", str(rundir), str(bad), "--out", str(tmp_path / "p"))
    assert code == 2 and "bad.png" in err and "Traceback" not in err


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "napari-semimoe"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    for cmd in ("summary", "train", "predict", "evaluate", "suggest", "bench", "gui"):
        assert cmd in out.stdout


# ----------------------------------------------------------------------------- logging


def _user_log(monkeypatch, folder: Path) -> Path:
    from napari_semimoe.core.logs import LOG_DIR_ENV, USER_LOG_NAME

    monkeypatch.setenv(LOG_DIR_ENV, str(folder))
    return folder / USER_LOG_NAME


@pytest.mark.parametrize("where", ["step", "start-up"])
def test_an_unexpected_error_in_training_is_one_line_and_its_traceback_is_logged(
    tiny_dataset, tmp_path, capsys, monkeypatch, where
):
    import napari_semimoe.core.data as data
    from napari_semimoe.core.train import Trainer

    def broken(*a, **kw):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(Trainer, "step", broken) if where == "step" else monkeypatch.setattr(
        data, "load_training_set", broken
    )
    user_log = _user_log(monkeypatch, tmp_path / "logs")
    rundir = tmp_path / "run"
    code, out, err = _train(capsys, tiny_dataset, rundir, "--labeled", "2", "--iterations", "3")
    assert code == 1 and out == ""
    assert "Traceback" not in err
    log_file = rundir / "train.log"
    [line] = _stderr_lines(err)
    assert line == (
        "napari-semimoe train: error: unexpected ZeroDivisionError: float division by zero "
        f"(details: {log_file})"
    )
    text = log_file.read_text()
    assert "Traceback (most recent call last)" in text and "in broken" in text
    assert "ZeroDivisionError: float division by zero" in text
    assert "train --data" in text  # the command that failed
    assert not user_log.exists()


def test_an_unexpected_error_in_predict_is_logged_in_the_user_log(
    tiny_dataset, tmp_path, capsys, monkeypatch
):
    import napari_semimoe.core.cohort as predict

    rundir = tmp_path / "run"
    code, _, err = _train(capsys, tiny_dataset, rundir, "--labeled", "2", "--iterations", "1")
    assert code == 0, err

    def broken(*a, **kw):
        raise KeyError("maps")

    monkeypatch.setattr(predict, "predict_slide", broken)
    user_log = _user_log(monkeypatch, tmp_path / "logs")
    img = tiny_dataset / "images" / "img_0.png"
    code, out, err = run(capsys, "predict", str(rundir), str(img), "--out", str(tmp_path / "p"))
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"napari-semimoe predict: error: unexpected KeyError: 'maps' (details: {user_log})"
    ]
    text = user_log.read_text()
    assert "Traceback (most recent call last)" in text and "KeyError: 'maps'" in text
    assert not (tmp_path / "p").exists()
    # A log that cannot be written is said, not a "--- Logging error ---" traceback.
    (tmp_path / "file").write_text("")
    _user_log(monkeypatch, tmp_path / "file")
    code, _, err = run(capsys, "predict", str(rundir), str(img), "--out", str(tmp_path / "p"))
    assert code == 1 and "Traceback" not in err and "Logging error" not in err
    [line] = err.strip().splitlines()
    assert "unexpected KeyError" in line and "traceback could not be logged" in line


def test_verbose_shows_debug_logs_and_a_user_mistake_leaves_no_log(tiny_dataset, tmp_path, capsys):
    rundir = tmp_path / "run"
    code, _, err = run(capsys, "-v", "train", "--data", str(tiny_dataset), "--out", str(rundir),
                       "--width", "4", "--input-size", "32", "--threads", "1",
                       "--labeled", "2", "--iterations", "1")  # fmt: skip
    assert code == 0, err
    assert f"napari-semimoe train: DEBUG napari_semimoe.core.runfolder: {rundir}: held by" in err
    assert "checkpoint saved at iteration 1" in (rundir / "train.log").read_text()
    code, _, err = _train(capsys, tiny_dataset, rundir, "--iterations", "1")
    assert code == 2 and "already holds a run" in err
    assert "Traceback" in (rundir / "train.log").read_text()  # the log has it all
    code, _, err = _train(capsys, tiny_dataset, tmp_path / "new", "--labeled", "9",
                          "--iterations", "1")  # fmt: skip
    assert code == 2 and not (tmp_path / "new").exists()  # no folder with only a log


def test_a_new_run_gets_the_run_configs_defaults(tiny_dataset, tmp_path, capsys):
    """Options not given are the one config's defaults (TrainConfig, Geometry): the CLI
    keeps no defaults of its own that could drift from the trainer's or the plugin's."""
    import dataclasses

    from napari_semimoe.core.data import Geometry
    from napari_semimoe.core.train import TrainConfig

    rundir = tmp_path / "run"
    code, _, err = run(capsys, "train", "--data", str(tiny_dataset), "--out", str(rundir),
                       "--width", "4", "--input-size", "32", "--iterations", "1")  # fmt: skip
    assert code == 0, err
    saved = json.loads((rundir / "config.json").read_text())
    given = {"width": 4, "iterations": 1, "geometry": Geometry(input_size=32).to_dict()}
    expected = {**dataclasses.asdict(TrainConfig()), **given}
    assert {k: saved[k] for k in expected} == expected
