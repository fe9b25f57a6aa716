"""Where each image comes from, in a project: the attribute is stored atomically with the
rest of project.json, absent means unknown (old projects load and save unchanged), a bad
value is one line, and the tiles cut for training carry their image's attribute into the
training-set file the child reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_semimoe.core.errors import InputError
from napari_semimoe.core.project import PROJECT_FILE, Project
from napari_semimoe.core.slide import Slide
from napari_semimoe.core.trainset import TRAINSET_FILE, load_trainset, trainset_attributes
from napari_semimoe.plugin.sample import synthetic_he


def test_attribute_round_trip_and_values_offered(tmp_path):
    p = Project(tmp_path / "p")
    a, b, c = p.entry("a"), p.entry("b"), p.entry("c")
    assert p.set_attribute(a, "  lab B ") == "lab B"  # stripped
    p.set_attribute(b, "lab A")
    p.set_attribute(c, "")  # blank: unknown
    again = Project(tmp_path / "p")
    assert [e.attribute for e in again.state.images] == ["lab B", "lab A", None]
    assert again.attribute_values() == ["lab A", "lab B"]
    assert again.attributes() == {"a": "lab B", "b": "lab A"}
    doc = json.loads((tmp_path / "p" / PROJECT_FILE).read_text())
    assert "attribute" not in doc["images"][2]  # unknown is absent, not null


def test_an_old_project_loads_and_saves_unchanged(tmp_path):
    p = Project(tmp_path / "p")
    p.add_tile(p.entry("a"), 0, 0, 64, "train")
    before = (tmp_path / "p" / PROJECT_FILE).read_bytes()
    assert b"attribute" not in before
    again = Project(tmp_path / "p")
    assert again.state.images[0].attribute is None and again.attribute_values() == []
    again.save()
    assert (tmp_path / "p" / PROJECT_FILE).read_bytes() == before


@pytest.mark.parametrize("bad", ["any", "ANY", "x" * 65, "two\nlines"])
def test_a_bad_attribute_is_one_line_and_changes_nothing(tmp_path, bad):
    p = Project(tmp_path / "p")
    e = p.entry("a")
    p.set_attribute(e, "lab A")
    with pytest.raises(InputError) as err:
        p.set_attribute(e, bad)
    assert "\n" not in str(err.value) and "'a'" in str(err.value)
    assert Project(tmp_path / "p").state.images[0].attribute == "lab A"


def test_an_edited_project_file_with_a_bad_attribute_is_refused(tmp_path):
    p = Project(tmp_path / "p")
    p.entry("a")
    f = tmp_path / "p" / PROJECT_FILE
    doc = json.loads(f.read_text())
    doc["images"][0]["attribute"] = 3
    f.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="must be text"):
        Project(tmp_path / "p")


def _two_images(tmp_path: Path):
    p = Project(tmp_path / "p")
    p.state.scale, p.state.tile = 2.0, 64
    slides, anns = {}, {}
    for i, name in enumerate(("a", "b")):
        image, _ = synthetic_he(384, seed=i)
        e = p.entry(name)
        p.add_tile(e, 0, 0, 128, "train")
        ann = np.zeros(image.shape[:2], np.uint16)
        ann[10:40, 10:40] = 1
        slides[e.id], anns[e.id] = Slide(Path(name), [image], [1.0], None), ann
    return p, slides, anns


def test_cut_tiles_carry_their_images_attribute_into_the_training_set(tmp_path):
    p, slides, anns = _two_images(tmp_path)
    p.set_attribute(p.state.images[0], "lab A")  # b stays unknown
    ts = p.build_training_set(lambda e: slides[e.id], lambda e: anns[e.id], max_unlabeled=8)
    table = trainset_attributes(tmp_path / "p" / TRAINSET_FILE)
    assert table and all(n.startswith("a/") for n in table) and set(table.values()) == {"lab A"}
    assert any(n.startswith("a/pool-") for n in table)  # the unlabeled tiles too
    back = load_trainset(tmp_path / "p" / TRAINSET_FILE)
    for names, attrs in (
        (back.labeled_names, back.labeled_attributes),
        (back.unlabeled_names, back.unlabeled_attributes),
    ):
        assert attrs == ["lab A" if n.startswith("a/") else None for n in names]
    assert back.labeled_attributes == ts.labeled_attributes


def test_a_set_without_attributes_has_no_attribute_member(tmp_path):
    p, slides, anns = _two_images(tmp_path)
    p.build_training_set(lambda e: slides[e.id], lambda e: anns[e.id], max_unlabeled=4)
    with np.load(tmp_path / "p" / TRAINSET_FILE) as z:
        assert "attributes" not in z.files
    back = load_trainset(tmp_path / "p" / TRAINSET_FILE)
    assert back.labeled_attributes == [] and back.unlabeled_attributes == []
