"""LabelDocument and History: painting, undo/redo, caps and memory, on real arrays."""

import numpy as np
import pytest

from segdesk.core.errors import LabelError
from segdesk.core.history import History, PaintAtom
from segdesk.core.label_document import LabelDocument


def doc_with(shape=(64, 64), fill=0, **history):
    return LabelDocument(np.full(shape, fill, np.uint8), History(**history) if history else None)


def stroke(doc, points, value=2, radius=2.0):
    doc.begin_stroke(value, radius)
    boxes = [doc.stroke_to(x, y) for x, y in points]
    doc.end_stroke()
    return boxes


def test_click_paints_disk_and_returns_its_box():
    doc = doc_with()
    v = doc.version
    doc.begin_stroke(2, 3)
    box = doc.stroke_to(20, 30)
    doc.end_stroke()
    assert box == (27, 17, 34, 24)
    assert (doc.label == 2).sum() == 29
    assert doc.version > v and not doc.is_empty


def test_three_segment_stroke_is_one_undo_step():
    doc = doc_with()
    doc.label[10:20, 10:20] = 3
    before = doc.label.copy()
    stroke(doc, [(5, 5), (25, 8), (30, 30), (12, 40)])
    painted = doc.label.copy()
    assert not np.array_equal(painted, before)
    assert doc.can_undo and not doc.can_redo
    assert doc.undo() is not None
    assert np.array_equal(doc.label, before)
    assert not doc.can_undo and doc.can_redo
    doc.redo()
    assert np.array_equal(doc.label, painted)


def test_each_pixel_recorded_once_per_stroke():
    doc = doc_with()
    stroke(doc, [(10, 10), (20, 10), (10, 10), (20, 10)], radius=3)
    assert doc.history.nbytes > 0
    painted = int((doc.label == 2).sum())
    atoms = doc.history._undo[-1]
    assert sum(a.old.size for a in atoms) == painted


def test_painting_the_same_value_records_nothing():
    doc = doc_with(fill=2)
    v = doc.version
    assert stroke(doc, [(5, 5), (20, 20)]) == [None, None]
    assert doc.fill(3, 3, 2) is None
    assert not doc.can_undo and doc.version == v


def test_new_stroke_after_undo_clears_redo():
    doc = doc_with()
    stroke(doc, [(5, 5), (10, 5)])
    doc.undo()
    assert doc.can_redo
    stroke(doc, [(30, 30)])
    assert not doc.can_redo and doc.redo() is None


def test_eraser_then_undo():
    doc = doc_with(fill=1)
    doc.label[20:40, 20:40] = 2
    before = doc.label.copy()
    stroke(doc, [(25, 25), (35, 35)], value=0, radius=4)
    assert (doc.label == 0).sum() > 0
    doc.undo()
    assert np.array_equal(doc.label, before)


def test_edge_and_outside_strokes():
    doc = doc_with(shape=(32, 48))
    stroke(doc, [(-3, -3), (0, 10), (47, 31), (60, 40)], radius=3)
    assert doc.label[0, 0] == 2 and doc.label[31, 47] == 2
    v = doc.version
    assert stroke(doc, [(-20, -20), (-20, 100)]) == [None, None]
    assert doc.version == v


def test_fill_inside_ring_leaves_outside_untouched():
    doc = doc_with(shape=(60, 60), fill=1)
    yy, xx = np.mgrid[:60, :60]
    r2 = (xx - 30) ** 2 + (yy - 30) ** 2
    ring = (r2 <= 15**2) & (r2 >= 12**2)
    doc.label[ring] = 2
    before = doc.label.copy()
    box = doc.fill(30, 30, 3)
    assert box is not None
    inside = r2 < 12**2
    assert (doc.label[inside] == 3).all()
    assert np.array_equal(doc.label[~inside], before[~inside])
    filled = doc.label.copy()
    doc.undo()
    assert np.array_equal(doc.label, before)
    doc.redo()
    assert np.array_equal(doc.label, filled)


def test_fill_of_a_large_region_holds_only_its_mask():
    doc = doc_with(shape=(256, 256), fill=0)
    doc.label[100:110, :] = 2  # the wall is kept apart from the filled region
    doc.fill(5, 5, 1)
    assert (doc.label[:100] == 1).all() and (doc.label[110:] == 0).all()
    assert doc.history.nbytes <= 100 * 256 + 2  # mask only; old/new values are uniform
    doc.undo()
    assert (doc.label[:100] == 0).all()


def test_polygon_then_undo():
    doc = doc_with(shape=(100, 100))
    box = doc.polygon([(10, 10), (90, 10), (10, 90)], 4)
    assert box == (10, 10, 91, 91)
    assert abs(int((doc.label == 4).sum()) - 3200) < 200
    doc.undo()
    assert doc.is_empty
    assert doc.polygon([(1, 1), (2, 2)], 4) is None


def test_history_caps_steps_and_bytes():
    doc = doc_with(max_steps=3)
    for i in range(5):
        stroke(doc, [(5 + 10 * i, 5)])
    assert len(doc.history) == 3
    for _ in range(3):
        assert doc.undo() is not None
    assert doc.undo() is None
    assert (doc.label == 2).sum() == 2 * 13  # the two oldest strokes stay

    one = doc_with()
    stroke(one, [(20, 20)])
    step_bytes = one.history.nbytes
    capped = doc_with(max_bytes=2 * step_bytes)
    for i in range(4):
        stroke(capped, [(5 + 10 * i, 5)])
        assert capped.history.nbytes <= 2 * step_bytes
    assert len(capped.history) == 2
    tiny = doc_with(max_bytes=10)
    stroke(tiny, [(20, 20)])
    assert not tiny.can_undo and tiny.history.nbytes == 0


def test_history_ignores_empty_steps():
    h = History()
    h.push([])
    empty = PaintAtom((0, 0, 1, 1), np.zeros((1, 1), bool), np.zeros(0, np.uint8), np.zeros(0, np.uint8))
    h.push([empty])
    assert not h.can_undo


def test_stroke_history_is_small_on_a_large_label():
    doc = doc_with(shape=(2048, 2048))
    stroke(doc, [(100, 100), (300, 150), (500, 400)], radius=10)
    assert 0 < doc.history.nbytes < doc.label.nbytes / 10


def test_set_label_replaces_in_place_and_clears_history():
    doc = doc_with(shape=(8, 8))
    live = doc.label
    stroke(doc, [(3, 3)])
    v = doc.version
    doc.set_label(np.full((8, 8), 1, np.uint8))
    assert doc.label is live and (live == 1).all()
    assert not doc.can_undo and doc.version > v
    with pytest.raises(LabelError):
        doc.set_label(np.zeros((8, 9), np.uint8))
    with pytest.raises(LabelError):
        LabelDocument(np.zeros((4, 4, 3), np.uint8))


def test_undo_during_a_stroke_closes_it_first():
    doc = doc_with()
    before = doc.label.copy()
    doc.begin_stroke(2, 2)
    doc.stroke_to(10, 10)
    doc.stroke_to(20, 10)
    assert doc.undo() is not None
    assert np.array_equal(doc.label, before)


def test_invalid_values_and_misuse():
    doc = doc_with()
    for bad in (-1, 256, 2.5):
        with pytest.raises(ValueError):
            doc.begin_stroke(bad, 2)
        with pytest.raises(ValueError):
            doc.fill(1, 1, bad)
    with pytest.raises(ValueError):
        doc.begin_stroke(2, 0)
    with pytest.raises(RuntimeError):
        doc.stroke_to(1, 1)


def test_replace_sets_a_box_as_one_undo_step_and_returns_what_undo_restores():
    doc = LabelDocument(np.zeros((20, 30), np.uint8))
    doc.begin_stroke(2, 2)
    doc.stroke_to(5, 5)
    doc.end_stroke()
    before = doc.label.copy()
    values = np.full((10, 12), 1, np.uint8)
    values[2:8, 3:9] = 2
    atom = doc.replace((4, 6, 14, 18), values)
    assert atom is not None and atom.box == (4, 6, 14, 18)
    assert np.array_equal(doc.label[4:14, 6:18], values)
    assert np.array_equal(doc.label[:4], before[:4]) and np.array_equal(doc.label[:, :6], before[:, :6])
    assert doc.replace((4, 6, 14, 18), values) is None  # nothing changed: no step
    assert np.array_equal(doc.undo(), (4, 6, 14, 18))
    assert np.array_equal(doc.label, before)
    doc.redo()
    assert np.array_equal(doc.label[4:14, 6:18], values)
    with pytest.raises(ValueError, match="not inside"):
        doc.replace((15, 0, 25, 5), np.zeros((10, 5), np.uint8))
    with pytest.raises(LabelError, match="does not match"):
        doc.replace((0, 0, 5, 5), np.zeros((4, 5), np.uint8))
