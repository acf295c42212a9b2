"""Undo/redo history of paint atoms.

A step (one stroke, fill or polygon) is a list of atoms. An atom stores only the box that changed, the
mask of changed pixels inside it and their old and new values, never a copy of the whole label
(napari's ``_MaskedPaintAtom``). The history is capped both in steps and in bytes.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
"""(y0, x0, y1, x1), half-open, in pixel coordinates."""


def union_box(a: Box | None, b: Box | None) -> Box | None:
    """Smallest box holding both; ``None`` stands for the empty box."""
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def uniform(value: int, size: int) -> np.ndarray:
    """``size`` copies of one uint8 value without allocating them (a read-only broadcast view)."""
    return np.broadcast_to(np.uint8(value), (size,))


def _is_uniform(values: np.ndarray) -> bool:
    return values.size > 0 and values.strides == (0,)


def _held_nbytes(values: np.ndarray) -> int:
    return values.itemsize if _is_uniform(values) else values.nbytes


@dataclass
class PaintAtom:
    """Pixels that changed in one box: ``label[box][mask]`` went from ``old`` to ``new``.

    ``old`` and ``new`` may be :func:`uniform` views when every pixel had (or gets) the same value,
    which is always true of ``new`` and of ``old`` for a flood fill; they then cost no memory.
    """

    box: Box
    mask: np.ndarray  # bool, shape (y1 - y0, x1 - x0)
    old: np.ndarray  # uint8, 1D, one value per True pixel of mask
    new: np.ndarray  # uint8, 1D, same length as old

    @property
    def nbytes(self) -> int:
        """Memory actually held (a uniform view counts as one byte)."""
        return int(self.mask.nbytes + _held_nbytes(self.old) + _held_nbytes(self.new))

    def apply(self, label: np.ndarray, values: np.ndarray) -> None:
        y0, x0, y1, x1 = self.box
        region = label[y0:y1, x0:x1]
        if _is_uniform(values):
            np.copyto(region, values[0], where=self.mask)  # much faster than fancy indexing
        else:
            region[self.mask] = values


def _step_nbytes(step: list[PaintAtom]) -> int:
    return sum(atom.nbytes for atom in step)


def _step_box(step: list[PaintAtom]) -> Box | None:
    box: Box | None = None
    for atom in step:
        box = union_box(box, atom.box)
    return box


class History:
    """Undo and redo stacks of steps, capped at ``max_steps`` steps and ``max_bytes`` bytes.

    The caps count the undo stack; the oldest steps are dropped first. A single step larger than
    ``max_bytes`` is not kept at all (it cannot be undone), so the memory cap always holds.
    """

    def __init__(self, max_steps: int = 100, max_bytes: int = 256 * 2**20) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be at least 1, got {max_steps}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, got {max_bytes}")
        self.max_steps = max_steps
        self.max_bytes = max_bytes
        self._undo: deque[list[PaintAtom]] = deque()
        self._redo: list[list[PaintAtom]] = []
        self._undo_bytes = 0
        self._redo_bytes = 0

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def nbytes(self) -> int:
        """Bytes held by both stacks."""
        return self._undo_bytes + self._redo_bytes

    def __len__(self) -> int:
        """Number of steps that can be undone."""
        return len(self._undo)

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()
        self._undo_bytes = 0
        self._redo_bytes = 0

    def push(self, step: list[PaintAtom]) -> None:
        """Record a new step; clears redo. Empty steps are ignored."""
        step = [atom for atom in step if atom.old.size]
        if not step:
            return
        self._redo.clear()
        self._redo_bytes = 0
        self._undo.append(step)
        self._undo_bytes += _step_nbytes(step)
        self._enforce_caps()

    def _enforce_caps(self) -> None:
        while self._undo and (
            len(self._undo) > self.max_steps or self._undo_bytes > self.max_bytes
        ):
            dropped = self._undo.popleft()
            self._undo_bytes -= _step_nbytes(dropped)
            if not self._undo:
                logger.warning(
                    "undo step of %d bytes exceeds the history cap of %d bytes; it cannot be undone",
                    _step_nbytes(dropped),
                    self.max_bytes,
                )

    def undo(self, label: np.ndarray) -> Box | None:
        """Restore the old values of the last step; returns the union box changed."""
        if not self._undo:
            return None
        step = self._undo.pop()
        nbytes = _step_nbytes(step)
        self._undo_bytes -= nbytes
        for atom in reversed(step):
            atom.apply(label, atom.old)
        self._redo.append(step)
        self._redo_bytes += nbytes
        return _step_box(step)

    def redo(self, label: np.ndarray) -> Box | None:
        """Re-apply the last undone step; returns the union box changed."""
        if not self._redo:
            return None
        step = self._redo.pop()
        nbytes = _step_nbytes(step)
        self._redo_bytes -= nbytes
        for atom in step:
            atom.apply(label, atom.new)
        self._undo.append(step)
        self._undo_bytes += nbytes
        return _step_box(step)
