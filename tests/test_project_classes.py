"""The project's class table (classes.json): stored atomically, read back, carried into the
training set; a binary project (no table) is exactly as before; a damaged file is one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_semimoe.core.classes import CLASSES_FILE, ClassTable
from napari_semimoe.core.errors import InputError
from napari_semimoe.core.project import Project, drop_class, glands_to_class
from napari_semimoe.core.slide import Slide
from napari_semimoe.core.sparse import BACKGROUND_LABEL

TABLE = ClassTable.from_names(
    ["background", "benign", "malignant"], ["#000000", "#00ff00", "#ff0000"]
)


def _project_with_tile(root: Path, labels: np.ndarray) -> tuple[Project, Slide]:
    """One 64 x 64 image, one training tile over its whole, working scale 1."""
    p = Project(root)
    p.state.scale, p.state.tile = 1.0, 32
    e = p.entry("img")
    p.add_tile(e, 0, 0, 64, "train")
    p.save_annotations(e, labels)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    return p, Slide(Path("img"), [img], [1.0], None)


def test_class_table_round_trip(tmp_path):
    p = Project(tmp_path)
    assert p.classes is None and not (tmp_path / CLASSES_FILE).exists()
    p.set_classes(TABLE)
    again = Project(tmp_path)
    assert again.classes == TABLE
    assert again.classes.names == ("background", "benign", "malignant")
    assert again.classes.colours[2] == "#ff0000"


def test_a_damaged_class_table_is_one_line(tmp_path):
    Project(tmp_path).save()
    (tmp_path / CLASSES_FILE).write_text('{"classes": [{"id": 0}, {"id": 2, "name": "x"}]}')
    with pytest.raises(InputError) as info:
        Project(tmp_path)
    assert "without gaps" in str(info.value) and "\n" not in str(info.value)
    (tmp_path / CLASSES_FILE).write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        Project(tmp_path)


def test_binary_project_trainset_is_unchanged(tmp_path):
    from napari_semimoe.core.trainset import TRAINSET_FILE, trainset_classes

    labels = np.zeros((64, 64), np.uint16)
    labels[4:20, 4:20] = 1
    labels[30:50, 30:50] = 2  # two gland instances
    p, slide = _project_with_tile(tmp_path, labels)
    ts = p.build_training_set(lambda e: slide)
    np.testing.assert_array_equal(ts.labeled_masks[0], labels)  # instance ids, as ever
    with np.load(tmp_path / TRAINSET_FILE) as z:
        assert "classes" not in z.files
    assert trainset_classes(tmp_path / TRAINSET_FILE) is None
    assert p.class_pixel_counts().size == 0


def test_defining_classes_turns_glands_into_class_1_and_the_set_carries_the_table(tmp_path):
    from napari_semimoe.core.trainset import TRAINSET_FILE, load_trainset, trainset_classes

    labels = np.zeros((64, 64), np.uint16)
    labels[4:20, 4:20] = 1
    labels[30:50, 30:50] = 7
    labels[0:2, :] = BACKGROUND_LABEL
    p, slide = _project_with_tile(tmp_path, labels)
    p.set_classes(TABLE, glands_to_class)
    saved = p.load_annotations(p.state.images[0])
    assert set(np.unique(saved).tolist()) == {0, 1, BACKGROUND_LABEL}
    assert [r for _, _, r in p.versions(p.state.images[0])] == ["before classes"]
    saved[30:50, 30:50] = 2  # paint the second gland malignant
    p.save_annotations(p.state.images[0], saved)
    np.testing.assert_array_equal(p.class_pixel_counts(), [16 * 16, 20 * 20])
    p.build_training_set(lambda e: slide)
    assert trainset_classes(tmp_path / TRAINSET_FILE) == TABLE.to_list()
    mask = load_trainset(tmp_path / TRAINSET_FILE).labeled_masks[0]
    assert mask[10, 10] == 1 and mask[40, 40] == 2
    assert mask[0, 0] == 0 and mask[25, 25] == -1  # brush = background, unpainted unknown


def test_an_id_above_the_table_is_refused_at_the_cut(tmp_path):
    labels = np.zeros((64, 64), np.uint16)
    labels[4:20, 4:20] = 5
    p, slide = _project_with_tile(tmp_path, labels)
    p.set_classes(TABLE)  # no relabel: 5 is no class id
    with pytest.raises(InputError, match="value 5 is no class id"):
        p.build_training_set(lambda e: slide)


def test_removing_a_class_unpaints_it_and_shifts_the_ones_above():
    a = np.array([[0, 1, 2, 3, BACKGROUND_LABEL]], np.uint16)
    np.testing.assert_array_equal(drop_class(a, 2), [[0, 1, 0, 2, BACKGROUND_LABEL]])
    np.testing.assert_array_equal(glands_to_class(a, 1), [[0, 1, 1, 1, BACKGROUND_LABEL]])


def test_accepting_a_class_map_adds_regions_off_the_painting_or_replaces():
    from napari_semimoe.plugin.accept import class_patch

    painted = np.zeros((6, 8), np.uint16)
    painted[0:2, 0:2] = 1  # the user's benign gland
    pred = np.zeros((6, 8), np.uint8)
    pred[0:3, 0:3] = 2  # a malignant region over the painting: the painting wins
    pred[4:6, 5:8] = 2  # one on unpainted tissue: added as class 2
    here = np.ones((6, 8), bool)
    here[:, 7] = False  # no prediction in the last column: left alone
    add = class_patch(painted, pred, here, replace=False)
    expected = painted.copy()
    expected[4:6, 5:7] = 2
    np.testing.assert_array_equal(add, expected)
    assert add.dtype == painted.dtype
    rep = class_patch(painted, pred, here, replace=True)
    np.testing.assert_array_equal(rep[:, :7], pred[:, :7])  # background erases painting too
    np.testing.assert_array_equal(rep[:, 7], painted[:, 7])
