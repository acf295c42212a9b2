"""The editable label of one image: paint tools on a live uint8 array, with undo.

Encoding: 0 = not labelled, 1 = background, 2.. = classes; the eraser paints 0. Every edit records
only the pixels whose value actually changed, so painting over the same pixels twice in one stroke,
or painting a value a pixel already has, costs nothing in the history.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence

import numpy as np

from segdesk.core import brush
from segdesk.core.errors import LabelError
from segdesk.core.history import Box, History, PaintAtom, uniform, union_box

logger = logging.getLogger(__name__)


def _check_value(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"label value must be an integer, got {value!r}")
    if not 0 <= int(value) <= 255:
        raise ValueError(f"label value must be in 0..255, got {value}")
    return int(value)


def _as_label(label: np.ndarray, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Validate a label array; returns it as a C-contiguous uint8 array (the same object if it is)."""
    arr = np.asarray(label)
    if arr.ndim != 2:
        raise LabelError(f"a label must be a 2D array, got shape {arr.shape}")
    if expected_shape is not None and arr.shape != tuple(expected_shape):
        raise LabelError(
            f"label size {arr.shape[1]}x{arr.shape[0]} does not match the image size "
            f"{expected_shape[1]}x{expected_shape[0]}"
        )
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.integer):
            raise LabelError(f"a label must hold integers, got {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise LabelError(
                f"label values must be in 0..255, got {arr.min()}..{arr.max()}"
            )
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


class LabelDocument:
    """The label being edited. ``label`` is the live array; read it, change it only through here."""

    def __init__(self, label: np.ndarray, history: History | None = None) -> None:
        self.label: np.ndarray = _as_label(label)
        self.history = history if history is not None else History()
        self.version = 0
        self._changed_box: Box | None = None  # what changed since ``take_changed`` (a saver's patch)
        self._stroke_value: int | None = None
        self._stroke_radius = 0.0
        self._stroke_last: tuple[float, float] | None = None
        self._stroke_atoms: list[PaintAtom] = []
        self._empty_cache: tuple[int, bool] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.label.shape  # type: ignore[return-value]

    @property
    def can_undo(self) -> bool:
        return self.history.can_undo or bool(self._stroke_atoms)

    @property
    def can_redo(self) -> bool:
        return self.history.can_redo

    @property
    def is_empty(self) -> bool:
        """True when no pixel is labelled (all 0). Cached per version."""
        if self._empty_cache is None or self._empty_cache[0] != self.version:
            self._empty_cache = (self.version, not self.label.any())
        return self._empty_cache[1]

    # -- painting ---------------------------------------------------------------------------

    def _paint(
        self, box: Box, mask: np.ndarray, value: int, old_value: int | None = None
    ) -> PaintAtom | None:
        """Set ``value`` under ``mask`` in ``box``; returns the atom of what changed, if anything.

        ``old_value`` says every masked pixel holds that value (a flood fill region), which spares
        comparing and copying them: filling most of a 4096 x 4096 label stays fast and small.
        """
        y0, x0, y1, x1 = box
        region = self.label[y0:y1, x0:x1]
        if old_value is None:
            changed = mask & (region != value)
            old = region[changed]
        elif old_value == value:
            return None
        else:
            changed = mask
            old = uniform(old_value, int(np.count_nonzero(mask)))
        if old.size == 0:
            return None
        atom = PaintAtom(box, changed, old, uniform(value, old.size))
        atom.apply(self.label, atom.new)
        self._changed(box)
        return atom

    def begin_stroke(self, value: int, radius: float) -> None:
        """Start a brush (or eraser, value 0) stroke. Ends any stroke still open."""
        value = _check_value(value)
        if not (radius > 0 and math.isfinite(radius)):
            raise ValueError(f"brush radius must be a positive finite number, got {radius}")
        self.end_stroke()
        self._stroke_value = value
        self._stroke_radius = float(radius)
        self._stroke_last = None
        self._stroke_atoms = []

    def stroke_to(self, x: float, y: float) -> Box | None:
        """Paint from the previous point (or a disk at the first one); returns the changed box."""
        if self._stroke_value is None:
            raise RuntimeError("stroke_to called outside a stroke; call begin_stroke first")
        start = self._stroke_last if self._stroke_last is not None else (x, y)
        self._stroke_last = (x, y)
        drawn = brush.segment_mask(start, (x, y), self._stroke_radius, self.shape)
        if drawn is None:
            return None
        atom = self._paint(drawn[0], drawn[1], self._stroke_value)
        if atom is None:
            return None
        self._stroke_atoms.append(atom)
        return atom.box

    def end_stroke(self) -> None:
        """Close the stroke: everything painted since begin_stroke becomes one undo step."""
        if self._stroke_value is None:
            return
        self.history.push(self._stroke_atoms)
        self._stroke_value = None
        self._stroke_last = None
        self._stroke_atoms = []

    def _single_step(
        self, drawn: tuple[Box, np.ndarray] | None, value: int, old_value: int | None = None
    ) -> Box | None:
        self.end_stroke()
        if drawn is None:
            return None
        atom = self._paint(drawn[0], drawn[1], value, old_value)
        if atom is None:
            return None
        self.history.push([atom])
        return atom.box

    def fill(self, x: int, y: int, value: int) -> Box | None:
        """Flood-fill the 4-connected region of equal value at (x, y); one undo step."""
        value = _check_value(value)
        drawn = brush.fill_mask(self.label, x, y)
        if drawn is None:
            return None
        seed = int(self.label[brush.to_pixel(y), brush.to_pixel(x)])
        return self._single_step(drawn, value, seed)

    def polygon(self, points: Sequence[tuple[float, float]], value: int) -> Box | None:
        """Fill a polygon (at least 3 points); one undo step."""
        value = _check_value(value)
        return self._single_step(brush.polygon_mask(points, self.shape), value)

    def replace(self, box: Box, values: np.ndarray) -> PaintAtom | None:
        """Set the pixels of ``box`` (y0, x0, y1, x1) to ``values`` (a label of the box's size), e.g. a
        click's answer; one undo step holding only the pixels that changed. Returns that step's atom
        (its box, mask and old values: what undoing it restores), or None when nothing changed."""
        self.end_stroke()
        h, w = self.shape
        y0, x0, y1, x1 = (int(v) for v in box)
        if not (0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w):
            raise ValueError(f"box {box} is not inside the {w}x{h} label")
        values = _as_label(values, (y1 - y0, x1 - x0))
        region = self.label[y0:y1, x0:x1]
        changed = region != values
        if not changed.any():
            return None
        atom = PaintAtom((y0, x0, y1, x1), changed, region[changed], values[changed])
        atom.apply(self.label, atom.new)
        self._changed(atom.box)
        self.history.push([atom])
        return atom

    # -- whole label and history --------------------------------------------------------------

    def set_label(self, label: np.ndarray) -> None:
        """Replace the whole label (e.g. an accepted proposal). Clears the history.

        The values are copied into the live array, so views of ``label`` held elsewhere stay valid.
        """
        new = _as_label(label, self.shape)
        self._stroke_value = None
        self._stroke_last = None
        self._stroke_atoms = []
        self.history.clear()
        np.copyto(self.label, new)
        self._changed((0, 0) + self.shape)
        logger.debug("label replaced (version %d); history cleared", self.version)

    def adopt(self, label: np.ndarray) -> None:
        """Make ``label`` (given away by the caller: nothing else may write to it) the live array,
        without copying it, e.g. the accepted label a writer thread merged and stored. Clears the
        history. Unlike ``set_label`` the change is not added to ``take_changed``'s box: whoever
        keeps a copy for patches (the project writer) applies the same change to it. Views of the
        old array held elsewhere (an overlay) must be pointed at the new one."""
        new = np.asarray(label)
        if new.dtype != np.uint8 or new.shape != self.shape or not new.flags.c_contiguous:
            raise LabelError(f"a label to adopt must be a C-contiguous uint8 {self.shape} array, "
                             f"got {new.dtype} {new.shape}")
        self.end_stroke()
        self.history.clear()
        self.label = new
        self.version += 1
        logger.debug("label adopted (version %d); history cleared", self.version)

    def undo(self) -> Box | None:
        """Undo the last step (an open stroke is closed first); returns the box changed."""
        self.end_stroke()
        box = self.history.undo(self.label)
        if box is not None:
            self._changed(box)
        return box

    def redo(self) -> Box | None:
        self.end_stroke()
        box = self.history.redo(self.label)
        if box is not None:
            self._changed(box)
        return box

    def _changed(self, box: Box) -> None:
        """Every change of the label comes through here: a new version, and its box remembered."""
        self.version += 1
        self._changed_box = union_box(self._changed_box, box)

    def take_changed(self) -> Box | None:
        """The box (y0, x0, y1, x1) holding every change since the last call (or since the document
        was made), and forget it; None when nothing changed. For a saver that writes patches."""
        box, self._changed_box = self._changed_box, None
        return box

