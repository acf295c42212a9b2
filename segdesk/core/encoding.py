"""The label encoding: one home for how classes become numbers (DESIGN.md "On-disk project").

Two numberings meet here, and nothing else in segdesk spells them:

- a **label** (a label PNG, the label being painted, a stored proposal) says for every pixel what
  the user has said about it: 0 = not labelled yet, 1 = background, ``k + 1`` = class k;
- a **class mask** (a model's prediction, an imported or exported mask, a benchmark's truth) is
  fully decided: 0 = background, ``k`` = class k.

Classes are numbered from 1 in the project's order, and that number is the one users see: in
``segdesk info``, exported masks, NIfTI and DICOM SEG segment numbers and the GUI's class list.
The label value ``k + 1`` is internal to the label files.

Training targets are class masks with ``IGNORE`` where the user has said nothing.
"""

from __future__ import annotations

import numpy as np

UNLABELLED = 0  # label value: the user has not said
BACKGROUND = 1  # label value: the user said "none of the classes"
IGNORE = -100  # training target value where the label is UNLABELLED (PyTorch's ignore_index)


def class_number(index: int) -> int:
    """The number users see for the class at 0-based ``index`` of the project's class list."""
    return index + 1


def label_value(number: int) -> int:
    """The label value of class ``number`` (1..K); 0 (background) gives BACKGROUND."""
    return number + 1


def class_value(index: int) -> int:
    """The label value of the class at 0-based ``index`` of the project's class list."""
    return label_value(class_number(index))


def max_label_value(n_classes: int) -> int:
    """The largest label value a project with ``n_classes`` classes may hold."""
    return label_value(n_classes)


def mask_to_label(mask: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Class mask (0 = background, 1..K) -> fully labelled label (1 = background, 2..).
    ``in_place``: a uint8 mask the caller no longer needs becomes the label (no copy of a large one)."""
    if in_place and isinstance(mask, np.ndarray) and mask.dtype == np.uint8 and mask.flags.writeable:
        mask += 1
        return mask
    return (np.asarray(mask, dtype=np.uint8) + 1).astype(np.uint8)


def label_to_mask(label: np.ndarray) -> np.ndarray:
    """Label -> class mask; pixels not labelled become background (0)."""
    label = np.asarray(label, dtype=np.uint8)
    return np.where(label > BACKGROUND, label - 1, 0).astype(np.uint8)


def label_to_target(label: np.ndarray) -> np.ndarray:
    """Label -> int64 training target: class mask with IGNORE where not labelled."""
    target = label.astype(np.int64) - 1
    target[label == UNLABELLED] = IGNORE
    return target


def has_unlabelled(label: np.ndarray) -> bool:
    """True where some pixel of ``label`` is UNLABELLED. ``not all`` since UNLABELLED is 0: the
    comparison ``label == UNLABELLED`` would make a whole-label temporary (400 MB at 20,000 px)."""
    return not bool(np.asarray(label).all())


MERGE_ROWS_PIXELS = 1 << 22  # merge_accept works on strips of about this many pixels


def merge_accept(painted: np.ndarray, proposal: np.ndarray | None = None) -> np.ndarray:
    """What accepting stores: the user's pixels win, the proposal fills what they left, and
    whatever neither labelled is background."""
    merged = np.asarray(painted, dtype=np.uint8).copy()
    merge_accept_into(merged, proposal)
    return merged


def merge_accept_into(label: np.ndarray, proposal: np.ndarray | None = None) -> None:
    """``merge_accept`` in place: ``label`` (uint8, C-contiguous, 2D) becomes what accepting it over
    ``proposal`` stores. Strip by strip, so the temporary masks stay a few megabytes whatever the
    size (a 20,000 px label is 400 MB; whole-label masks would double that)."""
    if label.dtype != np.uint8 or label.ndim != 2:
        raise ValueError(f"a label to merge must be a 2D uint8 array, got {label.dtype} {label.shape}")
    if proposal is not None:
        proposal = np.asarray(proposal, dtype=np.uint8)
        if proposal.shape != label.shape:
            raise ValueError(f"the proposal is {proposal.shape}, the label {label.shape}")
    rows = max(1, MERGE_ROWS_PIXELS // max(1, label.shape[1]))
    for y0 in range(0, label.shape[0], rows):
        strip = label[y0:y0 + rows]
        if proposal is not None:
            np.copyto(strip, proposal[y0:y0 + rows], where=strip == UNLABELLED)
        np.copyto(strip, BACKGROUND, where=strip == UNLABELLED)


def merge_accept_onto(proposal: np.ndarray, painted: np.ndarray) -> None:
    """``merge_accept(painted, proposal)`` written into ``proposal`` (uint8, C-contiguous, 2D: the
    caller's to give away), strip by strip. ``painted`` is only read: the pages of a label still
    mostly the zeros it was created as stay uncommitted (reading them maps the system's zero page),
    where merging into it or a merged copy commits the whole label (0.4 GB at 20,000 px)."""
    if proposal.dtype != np.uint8 or proposal.ndim != 2:
        raise ValueError(f"a proposal to merge onto must be a 2D uint8 array, got {proposal.dtype} {proposal.shape}")
    if painted.shape != proposal.shape:
        raise ValueError(f"the proposal is {proposal.shape}, the label {painted.shape}")
    rows = max(1, MERGE_ROWS_PIXELS // max(1, proposal.shape[1]))
    for y0 in range(0, proposal.shape[0], rows):
        strip, said = proposal[y0:y0 + rows], painted[y0:y0 + rows]
        np.copyto(strip, said, where=said != UNLABELLED)
        np.copyto(strip, BACKGROUND, where=strip == UNLABELLED)


def unlabelled_bits(label: np.ndarray) -> np.ndarray:
    """Where ``label`` (2D uint8) is UNLABELLED, one bit a pixel (rows packed, numpy.packbits): what
    undoes a merge in place (``restore_unlabelled``) at an eighth of the label's memory."""
    h, w = label.shape
    bits = np.empty((h, (w + 7) // 8), np.uint8)
    rows = max(1, MERGE_ROWS_PIXELS // max(1, w))
    for y0 in range(0, h, rows):
        bits[y0:y0 + rows] = np.packbits(label[y0:y0 + rows] == UNLABELLED, axis=1)
    return bits


def restore_unlabelled(label: np.ndarray, bits: np.ndarray) -> None:
    """Make the pixels ``bits`` (``unlabelled_bits``) marks UNLABELLED again, in place: ``label`` is
    then what it was before ``merge_accept_into``."""
    h, w = label.shape
    rows = max(1, MERGE_ROWS_PIXELS // max(1, w))
    for y0 in range(0, h, rows):
        was = np.unpackbits(bits[y0:y0 + rows], axis=1, count=w).view(bool)
        np.copyto(label[y0:y0 + rows], UNLABELLED, where=was)


# ----- agreement


def dice(pred: np.ndarray, truth: np.ndarray, counted: np.ndarray | None = None) -> float | None:
    """Hard Dice of two boolean masks over the ``counted`` pixels (all when None); None when
    both are empty there, since nothing was there to find."""
    if counted is not None:
        pred, truth = pred & counted, truth & counted
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    if total == 0:
        return None
    return 2.0 * float(np.count_nonzero(pred & truth)) / total


def mean_dice(pred: np.ndarray, truth: np.ndarray, counted: np.ndarray | None = None) -> float:
    """Dice of class masks, averaged over the classes present in the truth or the prediction (a
    class the prediction invents scores 0); 1.0 when neither has any: the empty answer was right.
    The one per-image Dice of validation and benchmarks alike."""
    if counted is not None:
        pred, truth = np.where(counted, pred, 0), np.where(counted, truth, 0)
    classes = sorted((set(np.unique(truth).tolist()) | set(np.unique(pred).tolist())) - {0})
    if not classes:
        return 1.0
    return float(np.mean([dice(pred == c, truth == c) for c in classes]))


def dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int,
                   counted: np.ndarray | None = None) -> list[float | None]:
    """Dice of classes 1..n_classes; None for a class absent from the truth (its Dice over the
    images that show it is what a per-class figure means)."""
    scores: list[float | None] = []
    for c in range(1, n_classes + 1):
        g = truth == c if counted is None else (truth == c) & counted
        scores.append(dice(pred == c, g, counted) if g.any() else None)
    return scores
