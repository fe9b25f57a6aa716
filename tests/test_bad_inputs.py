"""The bad-input campaign: user mistakes of every class through the CLI and the reader.

Each case must end in exit status 2 with exactly one line on stderr, no traceback and nothing
left in ``--out``; the reader must decline the file (None) or raise one ``ValueError`` line.
The classes: numeric options out of range or non-finite, output paths that are files, folders
or unwritable, checkpoints that are missing, damaged, absurd or inconsistent with their
tensors, images that are missing, damaged, impossible or not readable, data folders without
images or masks. Only the public CLI and reader are used, so the file also runs against older
versions (that is how the "failing before" figure in docs/reliability.md was taken).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from safetensors.torch import save_file

from napari_semimoe.cli import main
from napari_semimoe.plugin.reader import get_reader

# ----------------------------------------------------------------------------- fixtures


def header_only_tiff(
    path: Path, h: int = 60000, w: int = 60000, bytecount: int = 0, present: bool = False
) -> Path:
    """A classic RGB TIFF whose header declares h x w px in one uncompressed strip of
    ``bytecount`` bytes, not in the file unless ``present``: 140 bytes declaring 10.8 GB."""
    bps_off = 8 + 2 + 12 * 10 + 4
    tags = [  # (tag, type, count, value): 3 = SHORT, 4 = LONG
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, 3, bps_off),
        (259, 3, 1, 1),
        (262, 3, 1, 2),
        (273, 4, 1, bps_off + 6),
        (277, 3, 1, 3),
        (278, 4, 1, h),
        (279, 4, 1, bytecount),
        (284, 3, 1, 1),
    ]
    ifd = struct.pack("<H", len(tags))
    for tag, typ, cnt, val in tags:
        if typ == 3 and cnt == 1:
            ifd += struct.pack("<HHIHH", tag, typ, cnt, val, 0)
        else:
            ifd += struct.pack("<HHII", tag, typ, cnt, val)
    ifd += struct.pack("<I", 0)
    data = b"\x00" * bytecount if present else b""
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<HHH", 8, 8, 8) + data)
    return path


def _state() -> dict[str, torch.Tensor]:
    from napari_semimoe.core.model import SemiMoE

    torch.manual_seed(0)
    return {f"model.{k}": v.contiguous() for k, v in SemiMoE(4).state_dict().items()}


GOOD_META = {
    "width": 4,
    "geometry": {"scale": 1.0, "input_size": None, "tile": 64},
    "mean": [0.7, 0.5, 0.7],
    "std": [0.2, 0.2, 0.2],
    "config": {"width": 4},
}


def write_ckpt(path: Path, meta=None, tensors=None, raw_json: str | None = None) -> Path:
    """A checkpoint as the trainer writes it (safetensors + JSON metadata), or a damaged one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format_version": 1, "meta": GOOD_META if meta is None else meta, "optimizers": {}}
    text = json.dumps(doc) if raw_json is None else raw_json
    save_file(_state() if tensors is None else tensors, str(path), metadata={"json": text})
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Everything the cases point at, made once: a good run, images, data folders."""
    from napari_semimoe.core.bench import synthetic_tiles

    root = tmp_path_factory.mktemp("bad")
    w = {"root": root}
    run = root / "run"
    write_ckpt(run / "checkpoint.safetensors")
    w["run"] = run
    images, masks = synthetic_tiles(3, size=64, seed=2)
    data = root / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for i, (im, m) in enumerate(zip(images, masks)):
        Image.fromarray(im).save(data / "images" / f"img_{i}.png")
        Image.fromarray(m).save(data / "masks" / f"img_{i}.png")
    w["data"] = data
    w["img"] = data / "images" / "img_0.png"
    nomask = root / "nomasks"
    (nomask / "images").mkdir(parents=True)
    Image.fromarray(images[0]).save(nomask / "images" / "a.png")
    w["nomasks"] = nomask
    noimg = root / "noimages"
    noimg.mkdir()
    w["noimages"] = noimg
    colour = root / "colourmask"
    (colour / "images").mkdir(parents=True)
    (colour / "masks").mkdir()
    Image.fromarray(images[0]).save(colour / "images" / "a.png")
    Image.fromarray(images[0]).save(colour / "masks" / "a.png")
    w["colourmask"] = colour
    sizes = root / "sizemismatch"
    (sizes / "images").mkdir(parents=True)
    (sizes / "masks").mkdir()
    Image.fromarray(images[0]).save(sizes / "images" / "a.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(sizes / "masks" / "a.png")
    w["sizemismatch"] = sizes
    afile = root / "a_file.txt"
    afile.write_text("not a folder")
    w["file"] = afile
    # bad images
    bad = root / "badimg"
    bad.mkdir()
    header_only_tiff(bad / "bomb.tif")
    header_only_tiff(bad / "truncated.tif", h=4000, w=4000, bytecount=4000 * 4000 * 3)
    header_only_tiff(bad / "onestrip.tif", h=20000, w=20000, bytecount=100, present=True)
    (bad / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (bad / "empty.tif").write_bytes(b"")
    (bad / "garbage.tif").write_bytes(b"II*\x00garbage-garbage")
    (bad / "notes.txt").write_text("hello")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(bad / "gray.png")
    tifffile.imwrite(bad / "stack.tif", np.zeros((3, 32, 32, 3), np.uint8))
    tifffile.imwrite(bad / "five.tif", np.zeros((32, 32, 5), np.uint8), planarconfig="contig")
    (bad / "folder.png").mkdir()
    (bad / "cut.jpg").write_bytes(jpeg_bytes(images[0])[:200])
    w["bad"] = bad
    # bad checkpoints
    ck = root / "ckpt"
    ck.mkdir()
    (ck / "garbage.safetensors").write_bytes(b"\x00" * 64)
    save_file(_state(), str(ck / "nometa.safetensors"))
    write_ckpt(ck / "badjson.safetensors", raw_json="{not json")
    write_ckpt(ck / "nomodel.safetensors", raw_json=json.dumps({"format_version": 1}))
    write_ckpt(ck / "widthmismatch.safetensors", meta={**GOOD_META, "width": 8})
    write_ckpt(ck / "widthabsurd.safetensors", meta={**GOOD_META, "width": 10**6})
    write_ckpt(ck / "widthstr.safetensors", meta={**GOOD_META, "width": "four"})
    geo = {"scale": 1.0, "input_size": None, "tile": -64}
    write_ckpt(ck / "negtile.safetensors", meta={**GOOD_META, "geometry": geo})
    geo = {"scale": float("nan"), "input_size": None, "tile": 64}
    write_ckpt(ck / "nanscale.safetensors", meta={**GOOD_META, "geometry": geo})
    geo = {"scale": 1.0, "input_size": 10**7, "tile": 64}
    write_ckpt(ck / "hugesize.safetensors", meta={**GOOD_META, "geometry": geo})
    write_ckpt(ck / "zerostd.safetensors", meta={**GOOD_META, "std": [0.2, 0.0, 0.2]})
    nomean = {k: v for k, v in GOOD_META.items() if k != "mean"}
    write_ckpt(ck / "nomean.safetensors", meta=nomean)
    nogeo = {k: v for k, v in GOOD_META.items() if k not in ("geometry",)}
    write_ckpt(ck / "nogeometry.safetensors", meta={**nogeo, "config": {"width": 4}})
    t = _state()
    t["model.experts.seg.enc.0.1.weight"] = torch.ones(5)  # a BN of width 5 in a width-4 model
    write_ckpt(ck / "shapemismatch.safetensors", tensors=t)
    t = {k: v for k, v in _state().items() if "experts.seg.enc.0.0.weight" not in k}
    write_ckpt(ck / "notensor.safetensors", tensors=t)
    future = json.dumps({"format_version": 99, "meta": GOOD_META})
    write_ckpt(ck / "future.safetensors", raw_json=future)
    (root / "emptyrun").mkdir()
    w["ckpt"] = ck
    return w


def jpeg_bytes(image: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG")
    return buf.getvalue()


def deny(monkeypatch, target: Path) -> None:
    """Simulate a file or folder this user may not read or write (tests run as root, for
    whom permission bits do not apply): ``os.access`` says no for it."""
    real = os.access
    target = Path(target).absolute()

    def access(path, mode, *a, **k):
        if Path(path).absolute() == target:
            return False
        return real(path, mode, *a, **k)

    monkeypatch.setattr(os, "access", access)


# ----------------------------------------------------------------------------- the cases

TRAIN = ["train", "--data", "{data}", "--out", "{out}", "--iterations", "1", "--width", "4"]
PREDICT = ["predict", "{run}", "{img}", "--out", "{out}", "--threads", "1"]
SUGGEST = ["suggest", "{run}", "{img}", "--threads", "1"]
EVAL = ["evaluate", "{run}", "--data", "{data}", "--threads", "1"]

#: (id, argv, a word the message must contain); {names} are filled from the workspace.
CASES: list[tuple[str, list[str], str]] = [
    # numeric options: 0, negative, non-finite, not a number, absurdly large
    ("predict-tile-0", [*PREDICT, "--tile", "0"], "--tile"),
    ("predict-tile-neg", [*PREDICT, "--tile", "-16"], "--tile"),
    ("predict-tile-17", [*PREDICT, "--tile", "17"], "--tile"),
    ("predict-tile-nan", [*PREDICT, "--tile", "nan"], "--tile"),
    ("predict-tile-huge", [*PREDICT, "--tile", "1048576"], "--tile"),
    ("predict-overlap-neg", [*PREDICT, "--overlap", "-1"], "--overlap"),
    ("predict-overlap-huge", [*PREDICT, "--overlap", "100000"], "--overlap"),
    ("predict-batch-0", [*PREDICT, "--batch", "0"], "--batch"),
    ("predict-batch-inf", [*PREDICT, "--batch", "inf"], "--batch"),
    ("predict-batch-huge", [*PREDICT, "--batch", "10000000"], "--batch"),
    ("predict-threads-0", [*PREDICT, "--threads", "0"], "--threads"),
    ("predict-threads-neg", [*PREDICT, "--threads", "-2"], "--threads"),
    ("evaluate-batch-neg", [*EVAL, "--batch", "-1"], "--batch"),
    ("train-lr-nan", [*TRAIN, "--input-size", "32", "--lr", "nan"], "--lr"),
    ("train-lr-inf", [*TRAIN, "--input-size", "32", "--lr", "inf"], "--lr"),
    ("train-lr-0", [*TRAIN, "--input-size", "32", "--lr", "0"], "--lr"),
    ("train-lr-neg", [*TRAIN, "--input-size", "32", "--lr", "-0.1"], "--lr"),
    ("train-lr-word", [*TRAIN, "--input-size", "32", "--lr", "fast"], "--lr"),
    ("train-scale-0", [*TRAIN, "--scale", "0"], "--scale"),
    ("train-scale-nan", [*TRAIN, "--scale", "nan"], "--scale"),
    ("train-scale-huge", [*TRAIN, "--scale", "1e300"], "--scale"),
    ("train-input-size-0", [*TRAIN, "--input-size", "0"], "--input-size"),
    ("train-input-size-huge", [*TRAIN, "--input-size", "1048576"], "--input-size"),
    ("train-tile-8", [*TRAIN, "--input-size", "32", "--tile", "8"], "--tile"),
    ("train-tile-huge", [*TRAIN, "--tile", "1048576"], "--tile"),
    ("train-width-huge", [*TRAIN, "--width", "1000000"], "--width"),
    ("train-width-neg", [*TRAIN, "--width", "-4"], "--width"),
    ("train-iterations-0", [*TRAIN[:-4], "--width", "4", "--iterations", "0"], "--iterations"),
    ("train-iterations-neg", [*TRAIN[:-4], "--width", "4", "--iterations", "-5"], "--iterations"),
    (
        "train-checkpoint-every-0",
        [*TRAIN, "--input-size", "32", "--checkpoint-every", "0"],
        "--checkpoint-every",
    ),
    (
        "train-snapshot-every-neg",
        [*TRAIN, "--input-size", "32", "--snapshot-every", "-1"],
        "--snapshot-every",
    ),
    ("train-labeled-0", [*TRAIN, "--input-size", "32", "--labeled", "0"], "--labeled"),
    (
        "train-fraction-0",
        [*TRAIN, "--input-size", "32", "--labeled-fraction", "0"],
        "--labeled-fraction",
    ),
    (
        "train-fraction-1.5",
        [*TRAIN, "--input-size", "32", "--labeled-fraction", "1.5"],
        "--labeled-fraction",
    ),
    (
        "train-fraction-nan",
        [*TRAIN, "--input-size", "32", "--labeled-fraction", "nan"],
        "--labeled-fraction",
    ),
    ("train-seed-neg", [*TRAIN, "--input-size", "32", "--seed", "-1"], "--seed"),
    ("train-gamma-neg", [*TRAIN, "--input-size", "32", "--gamma", "-1"], "--gamma"),
    ("train-lambda-inf", [*TRAIN, "--input-size", "32", "--lambda-max", "inf"], "--lambda-max"),
    ("train-threads-0", [*TRAIN, "--input-size", "32", "--threads", "0"], "--threads"),
    ("suggest-top-0", [*SUGGEST, "--top", "0"], "--top"),
    ("suggest-top-neg", [*SUGGEST, "--top", "-3"], "--top"),
    ("suggest-tile-0", [*SUGGEST, "--tile", "0"], "--tile"),
    ("bench-repeats-0", ["bench", "--repeats", "0"], "--repeats"),
    ("bench-width-3", ["bench", "--width", "3"], "--width"),
    ("summary-width-huge", ["summary", "--width", "1000000"], "--width"),
    ("summary-width-nan", ["summary", "--width", "nan"], "--width"),
    # output paths: a file, under a file, a folder where a file is wanted
    ("predict-out-is-file", [*PREDICT[:-4], "--out", "{file}"], "is a file"),
    ("predict-out-under-file", [*PREDICT[:-4], "--out", "{file}/sub"], "not a folder"),
    ("evaluate-json-is-folder", [*EVAL, "--json", "{root}"], "is a folder"),
    ("evaluate-json-under-file", [*EVAL, "--json", "{file}/m.json"], "not a folder"),
    ("suggest-json-is-folder", [*SUGGEST, "--json", "{root}"], "is a folder"),
    ("bench-json-is-folder", ["bench", "--json", "{root}"], "is a folder"),
    ("train-out-is-file", [*TRAIN[:3], "--out", "{file}", "--iterations", "1"], "is a file"),
    # checkpoints: missing, damaged, absurd, inconsistent with their tensors
    ("ckpt-empty-run", ["predict", "{root}/emptyrun", "{img}", "--out", "{out}"], "checkpoint"),
    ("ckpt-missing", ["predict", "{root}/nope", "{img}", "--out", "{out}"], "no such"),
    (
        "ckpt-garbage",
        ["predict", "{ckpt}/garbage.safetensors", "{img}", "--out", "{out}"],
        "checkpoint",
    ),
    (
        "ckpt-no-metadata",
        ["predict", "{ckpt}/nometa.safetensors", "{img}", "--out", "{out}"],
        "metadata",
    ),
    (
        "ckpt-bad-json",
        ["predict", "{ckpt}/badjson.safetensors", "{img}", "--out", "{out}"],
        "damaged",
    ),
    (
        "ckpt-no-meta-section",
        ["predict", "{ckpt}/nomodel.safetensors", "{img}", "--out", "{out}"],
        "damaged",
    ),
    (
        "ckpt-width-mismatch",
        ["predict", "{ckpt}/widthmismatch.safetensors", "{img}", "--out", "{out}"],
        "width",
    ),
    (
        "ckpt-width-absurd",
        ["predict", "{ckpt}/widthabsurd.safetensors", "{img}", "--out", "{out}"],
        "width",
    ),
    (
        "ckpt-width-not-int",
        ["predict", "{ckpt}/widthstr.safetensors", "{img}", "--out", "{out}"],
        "width",
    ),
    (
        "ckpt-negative-tile",
        ["predict", "{ckpt}/negtile.safetensors", "{img}", "--out", "{out}"],
        "tile",
    ),
    (
        "ckpt-nan-scale",
        ["predict", "{ckpt}/nanscale.safetensors", "{img}", "--out", "{out}"],
        "scale",
    ),
    (
        "ckpt-huge-input-size",
        ["predict", "{ckpt}/hugesize.safetensors", "{img}", "--out", "{out}"],
        "input_size",
    ),
    ("ckpt-zero-std", ["predict", "{ckpt}/zerostd.safetensors", "{img}", "--out", "{out}"], "std"),
    ("ckpt-no-mean", ["predict", "{ckpt}/nomean.safetensors", "{img}", "--out", "{out}"], "mean"),
    (
        "ckpt-shape-mismatch",
        ["predict", "{ckpt}/shapemismatch.safetensors", "{img}", "--out", "{out}"],
        "checkpoint",
    ),
    (
        "ckpt-no-weights",
        ["predict", "{ckpt}/notensor.safetensors", "{img}", "--out", "{out}"],
        "weights",
    ),
    (
        "ckpt-newer-version",
        ["predict", "{ckpt}/future.safetensors", "{img}", "--out", "{out}"],
        "newer",
    ),
    (
        "evaluate-ckpt-absurd",
        ["evaluate", "{ckpt}/widthabsurd.safetensors", "--data", "{data}"],
        "width",
    ),
    (
        "suggest-ckpt-mismatch",
        ["suggest", "{ckpt}/shapemismatch.safetensors", "{img}"],
        "checkpoint",
    ),
    # images: missing, damaged, impossible, not an RGB image
    ("img-missing", [*PREDICT[:2], "{root}/nothere.png", *PREDICT[3:]], "not found"),
    ("img-unsupported", [*PREDICT[:2], "{bad}/notes.txt", *PREDICT[3:]], "unsupported"),
    ("img-corrupt-png", [*PREDICT[:2], "{bad}/corrupt.png", *PREDICT[3:]], "corrupt.png"),
    ("img-cut-jpeg", [*PREDICT[:2], "{bad}/cut.jpg", *PREDICT[3:]], "cut.jpg"),
    ("img-header-only-60000", [*PREDICT[:2], "{bad}/bomb.tif", *PREDICT[3:]], "no image data"),
    ("img-truncated-tiff", [*PREDICT[:2], "{bad}/truncated.tif", *PREDICT[3:]], "truncated"),
    ("img-one-huge-strip", [*PREDICT[:2], "{bad}/onestrip.tif", *PREDICT[3:]], "onestrip.tif"),
    ("img-empty-tiff", [*PREDICT[:2], "{bad}/empty.tif", *PREDICT[3:]], "empty.tif"),
    ("img-garbage-tiff", [*PREDICT[:2], "{bad}/garbage.tif", *PREDICT[3:]], "garbage.tif"),
    ("img-grayscale", [*PREDICT[:2], "{bad}/gray.png", *PREDICT[3:]], "grayscale"),
    ("img-stack", [*PREDICT[:2], "{bad}/stack.tif", *PREDICT[3:]], "stack"),
    ("img-five-channels", [*PREDICT[:2], "{bad}/five.tif", *PREDICT[3:]], "channels"),
    ("img-is-folder", [*PREDICT[:2], "{bad}/folder.png", *PREDICT[3:]], "not a file"),
    ("suggest-img-bomb", [*SUGGEST[:2], "{bad}/bomb.tif", *SUGGEST[3:]], "no image data"),
    ("suggest-exclude-bad", [*SUGGEST, "--exclude", "1,2,3"], "--exclude"),
    # data folders
    ("evaluate-data-missing", ["evaluate", "{run}", "--data", "{root}/nodata"], "no such folder"),
    ("evaluate-data-is-file", ["evaluate", "{run}", "--data", "{file}"], "not a folder"),
    ("evaluate-no-images", ["evaluate", "{run}", "--data", "{noimages}"], "images"),
    ("evaluate-no-masks", ["evaluate", "{run}", "--data", "{nomasks}"], "no 'masks' folder"),
    ("evaluate-colour-mask", ["evaluate", "{run}", "--data", "{colourmask}"], "colour"),
    ("evaluate-mask-size", ["evaluate", "{run}", "--data", "{sizemismatch}"], "10x10"),
    (
        "train-no-masks",
        ["train", "--data", "{nomasks}", "--out", "{out}", "--iterations", "1"],
        "masks",
    ),
]


def fill(args: list[str], ws, out: Path) -> list[str]:
    names = {k: str(v) for k, v in ws.items()}
    names["out"] = str(out)
    return [a.format(**names) for a in args]


def left_in(out: Path) -> list[str]:
    """Everything in ``out``, hidden entries included."""
    return sorted(p.name for p in out.rglob("*")) if out.exists() else []


def check_one_line(code: int, err: str, word: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert word.lower() in lines[0].lower(), err


@pytest.mark.parametrize(("args", "word"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(ws, tmp_path, capsys, args, word):
    out = tmp_path / "out"
    try:
        code = main(fill(args, ws, out))
    except SystemExit as exc:  # an argparse usage error that escaped main()
        code = exc.code
    captured = capsys.readouterr()
    check_one_line(code, captured.err, word)
    assert left_in(out) == []


# ----------------------------------------------------------------------------- permissions


@pytest.mark.parametrize(
    ("what", "args"),
    [
        ("image", [*PREDICT]),
        ("checkpoint", [*PREDICT]),
        ("out", [*PREDICT]),
        ("json", [*EVAL, "--json", "{root}/locked/m.json"]),
    ],
)
def test_permission_denied_is_said_as_such(ws, tmp_path, capsys, monkeypatch, what, args):
    out = tmp_path / "out"
    target = {
        "image": ws["img"],
        "checkpoint": ws["run"] / "checkpoint.safetensors",
        "out": tmp_path,  # the folder --out would be created in
        "json": ws["root"] / "locked",
    }[what]
    if what == "json":
        target.mkdir(exist_ok=True)
    deny(monkeypatch, target)
    code = main(fill(args, ws, out))
    err = capsys.readouterr().err
    check_one_line(code, err, "permission denied")
    assert "no such" not in err and "not found" not in err
    assert left_in(out) == []


# ----------------------------------------------------------------------------- the reader

READER_FILES = [
    "bomb.tif",
    "truncated.tif",
    "onestrip.tif",
    "corrupt.png",
    "cut.jpg",
    "empty.tif",
    "garbage.tif",
    "gray.png",
    "stack.tif",
    "five.tif",
    "folder.png",
    "notes.txt",
]


@pytest.mark.parametrize("name", READER_FILES)
def test_reader_declines_or_says_one_line(ws, name):
    path = str(ws["bad"] / name)
    reader = get_reader(path)
    if reader is None:
        return
    with pytest.raises(ValueError) as info:
        reader(path)
    assert "\n" not in str(info.value) and name in str(info.value)


def test_reader_permission_denied(ws, monkeypatch):
    deny(monkeypatch, ws["img"])
    with pytest.raises(ValueError, match="permission denied"):
        get_reader(str(ws["img"]))(str(ws["img"]))


# ----------------------------------------------------------------------------- real processes


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "napari_semimoe.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


SUBPROCESS_CASES = [
    "img-garbage-tiff",
    "predict-tile-nan",
    "img-header-only-60000",
    "ckpt-width-absurd",
    "train-lr-inf",
    "predict-out-is-file",
]


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_no_traceback_reaches_a_real_stderr(ws, tmp_path, case):
    _, args, word = next(c for c in CASES if c[0] == case)
    out = tmp_path / "out"
    proc = cli(*fill(args, ws, out))
    check_one_line(proc.returncode, proc.stderr, word)
    assert left_in(out) == []


# ----------------------------------------------------------------------------- many inputs


def test_predict_continues_past_unreadable_inputs_and_reports_each(ws, tmp_path, capsys):
    """Two good images among three bad ones: both good ones are predicted (one JSON line
    each), each failure is one line on stderr at the end, and the exit status is 2."""
    good = [str(ws["data"] / "images" / f"img_{i}.png") for i in (1, 2)]
    bad = [str(ws["bad"] / n) for n in ("bomb.tif", "corrupt.png")] + [str(tmp_path / "no.png")]
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(ws["run"]),
            bad[0],
            good[0],
            bad[1],
            good[1],
            bad[2],
            "--out",
            str(out),
            "--threads",
            "1",
            "--precision",
            "fp32",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2
    done = [json.loads(line)["image"] for line in captured.out.strip().splitlines()]
    assert done == good
    errors = [ln for ln in captured.err.splitlines() if ": error: " in ln]
    assert len(errors) == 3 and "Traceback" not in captured.err
    for name, line in zip(("bomb.tif", "corrupt.png", "no.png"), errors):
        assert name in line
    assert (out / "img_1_mask.tif").exists() and (out / "img_2_instances.tif").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- recovered


def test_damaged_run_json_next_to_a_good_checkpoint_is_reported_not_fatal(ws, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(ws["run"], run)
    (run / "config.json").write_text('{"width": 4, "geom')  # cut by a full disk
    (run / "history.json").write_text("[]")
    code = main(
        ["predict", str(run), str(ws["img"]), "--out", str(tmp_path / "o"), "--threads", "1"]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    warning = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(warning) == 1 and "config.json is damaged" in warning[0]
    assert "history.json" not in err
    assert (tmp_path / "o" / "img_0_mask.tif").exists()


def test_missing_width_and_geometry_are_recovered_from_the_checkpoint(tmp_path, capsys):
    from napari_semimoe.core.inference import load_model

    meta = {k: v for k, v in GOOD_META.items() if k not in ("width", "geometry")}
    meta["config"] = {"geometry": GOOD_META["geometry"]}
    path = write_ckpt(tmp_path / "c.safetensors", meta=meta)
    loaded = load_model(path, "cpu")
    assert loaded.meta["width"] == 4 and loaded.geometry.tile == 64


# ----------------------------------------------------------------------------- warnings


def test_warnings_not_silence(ws, tmp_path, capsys, caplog):
    """All-background and all-gland masks, a mask without an image and NaN pixels are
    warnings: the command goes on, and says what it saw."""
    from napari_semimoe.core.data import Geometry, load_training_set, scan_folder

    data = tmp_path / "d"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    im = np.asarray(Image.open(ws["img"]))
    for name in ("empty", "full"):
        Image.fromarray(im).save(data / "images" / f"{name}.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(data / "masks" / "empty.png")
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(data / "masks" / "full.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(data / "masks" / "orphan.png")
    f = (im / 255.0).astype(np.float32)
    f[0, 0] = np.nan
    tifffile.imwrite(data / "images" / "nan.tif", f, photometric="rgb")

    code = main(["evaluate", str(ws["run"]), "--data", str(data), "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "1 mask in" in err and "without an image" in err and "orphan.png" in err
    assert "1 mask with no gland (all background): empty" in err
    assert "1 mask with no background (all gland): full" in err
    assert "Traceback" not in err

    caplog.clear()
    items = [it for it in scan_folder(data) if it.mask_path]
    with caplog.at_level("WARNING"):
        load_training_set(items, [], Geometry(input_size=32))
    assert "no gland (all background): empty" in caplog.text
    unlabeled = [it for it in scan_folder(data) if it.name == "nan"]
    with caplog.at_level("WARNING"):
        load_training_set(items, unlabeled, Geometry(input_size=32))
    assert "nan.tif: 3 pixel values are NaN or infinite" in caplog.text


def test_ctrl_c_while_starting_up_is_one_line(monkeypatch, capsys):
    import napari_semimoe.cli.app as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["summary"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "napari-semimoe: interrupted"
