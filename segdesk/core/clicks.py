"""Click prompts: where a click goes, and the maps a click-aware U-Net reads (DESIGN.md "Model").

A click says "this pixel is class c" (positive) or "this pixel is not class c" (negative). The
U-Net takes, besides the image, 3K prompt channels for K classes (``prompt_channels``): for each
class a map of its positive clicks, one of its negative clicks (disks of CLICK_RADIUS working
pixels) and the previous mask of that class. With no clicks and an empty previous mask the maps are
all zero: the automatic proposal.

``next_click`` is the standard protocol of interactive segmentation (RITM, ScribblePrompt and
MultiverSeg measure with it; DESIGN.md "Measuring", clicks): the click goes at the point of the
largest error region farthest from its edge, positive or negative by what the truth says there.
Training simulates clicks with it on the model's own errors, and ``segdesk bench loop --clicks``
places the user's clicks with it.

Masks here are class masks (segdesk.core.encoding: 0 = background, 1..K = classes). numpy and
OpenCV only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import cv2
import numpy as np

CLICK_RADIUS = 3  # working pixels: a click's disk in the prompt maps (RITM uses 5 at about 2x the size)


@dataclass(frozen=True)
class Click:
    """One click at image pixel (y, x): ``positive`` = "this is class ``class_number``"."""

    y: float
    x: float
    class_number: int  # 1..K, the number users see (segdesk.core.encoding.class_number)
    positive: bool


def prompt_channels(n_classes: int) -> int:
    """How many prompt channels a click-aware U-Net for ``n_classes`` classes reads."""
    return 3 * n_classes


def next_click(shown: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> Click | None:
    """The protocol's next click for a user who wants ``truth`` and sees ``shown`` (class masks of one
    shape), or None when they agree. ``valid``: where the truth is known (elsewhere nothing is wrong).

    The largest 8-connected region where they differ (all classes together, as a user sees a wrong
    colour); in it, the point farthest from the region's edge (the image border counts as edge);
    positive for the true class there, or negative for the shown class where the truth is background.
    """
    error = shown != truth
    if valid is not None:
        error &= valid
    if not error.any():
        return None
    n, components, stats, _ = cv2.connectedComponentsWithStats(error.astype(np.uint8), connectivity=8)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x0, y0 = stats[largest, cv2.CC_STAT_LEFT], stats[largest, cv2.CC_STAT_TOP]
    w, h = stats[largest, cv2.CC_STAT_WIDTH], stats[largest, cv2.CC_STAT_HEIGHT]
    region = (components[y0 : y0 + h, x0 : x0 + w] == largest).astype(np.uint8)
    distance = cv2.distanceTransform(np.pad(region, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    y, x = int(y) + int(y0), int(x) + int(x0)
    true_class = int(truth[y, x])
    if true_class > 0:
        return Click(y, x, true_class, True)
    return Click(y, x, int(shown[y, x]), False)


def random_clicks(truth: np.ndarray, rng: np.random.Generator, positives: int, negatives: int,
                  valid: np.ndarray | None = None) -> list[Click]:
    """Clicks a user might start with on an empty mask: ``positives`` inside the true objects (each on
    a random pixel of a random class present) and ``negatives`` on the background, for training."""
    clicks: list[Click] = []
    known = np.ones(truth.shape, bool) if valid is None else valid
    present = [int(c) for c in np.unique(truth[known]) if c > 0]
    for _ in range(positives if present else 0):
        c = present[int(rng.integers(len(present)))]
        ys, xs = np.nonzero((truth == c) & known)
        i = int(rng.integers(len(ys)))
        clicks.append(Click(int(ys[i]), int(xs[i]), c, True))
    ys, xs = np.nonzero((truth == 0) & known)
    for _ in range(negatives if present and len(ys) else 0):
        i = int(rng.integers(len(ys)))
        clicks.append(Click(int(ys[i]), int(xs[i]), present[int(rng.integers(len(present)))], False))
    return clicks


def prompt_maps(clicks: Iterable[Click], previous: np.ndarray | None, n_classes: int,
                shape: tuple[int, int], scale: tuple[float, float] = (1.0, 1.0),
                origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The 3K x h x w float32 prompt channels at working resolution ``shape``: for each class, its
    positive clicks, its negative clicks (disks of CLICK_RADIUS), then its previous mask.

    ``scale``: working pixels per image pixel, (y, x); clicks are in image pixels. ``origin``: the
    working pixel (y, x) where these maps start (a window of the image: only it is drawn).
    ``previous``: the class mask the clicks correct, of these maps' area (any resolution; resized with
    nearest), or None for none."""
    h, w = shape
    maps = np.zeros((3 * n_classes, h, w), np.uint8)
    for click in clicks:
        c = int(click.class_number)
        if not 1 <= c <= n_classes:
            continue
        channel = (c - 1) if click.positive else (n_classes + c - 1)
        centre = (int(round((click.x + 0.5) * scale[1] - 0.5)) - origin[1],
                  int(round((click.y + 0.5) * scale[0] - 0.5)) - origin[0])
        cv2.circle(maps[channel], centre, CLICK_RADIUS, 1, thickness=-1)
    if previous is not None and previous.any():
        if previous.shape != (h, w):
            previous = cv2.resize(previous.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        for c in range(1, n_classes + 1):
            maps[2 * n_classes + c - 1] = previous == c
    return maps.astype(np.float32)


def keep_clicks(mask: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
    """``mask`` with every clicked pixel as its click said (a copy): a positive click's pixel is its
    class, a negative click's pixel is not (background). A user's click is never overruled."""
    out = mask.copy()
    h, w = out.shape
    for click in clicks:
        y, x = int(round(click.y)), int(round(click.x))
        if 0 <= y < h and 0 <= x < w:
            if click.positive:
                out[y, x] = click.class_number
            elif out[y, x] == click.class_number:
                out[y, x] = 0
    return out


def disagrees(mask: np.ndarray, click: Click) -> bool:
    """Whether ``mask`` says otherwise than ``click`` at its pixel (False outside the mask)."""
    y, x = int(round(click.y)), int(round(click.x))
    if not (0 <= y < mask.shape[0] and 0 <= x < mask.shape[1]):
        return False
    return (mask[y, x] != click.class_number) if click.positive else (mask[y, x] == click.class_number)


def local_change(previous: np.ndarray, answer: np.ndarray, points: Sequence[tuple[int, int]],
                 clicks: Sequence[Click] | None = None) -> np.ndarray:
    """``previous`` changed only where ``answer`` differs from it in the regions connected to the
    clicks at ``points`` (y, x): the pixels that changed form connected regions (8-neighbours), and
    only those touching a click's 3 x 3 neighbourhood are taken (FocalClick's "progressive merge").
    A click then fixes what is wrong where it was made and cannot undo what is already right
    elsewhere in the window, e.g. an earlier click's correction. With ``clicks`` (one per point), a
    click only moves pixels its way: a positive click's region is of pixels becoming its class, a
    negative click's of pixels leaving it (a "not this" never grows the class). Class masks of one
    shape; a copy."""
    out = previous.copy()
    differs = previous != answer
    take = np.zeros(previous.shape, bool)
    if clicks is None:
        groups = [(differs, list(points))]
    else:
        groups = [(differs & ((answer == c.class_number) if c.positive else (previous == c.class_number)), [point])
                  for point, c in zip(points, clicks)]
    for changed, at in groups:
        _, regions = cv2.connectedComponents(changed.astype(np.uint8), connectivity=8)
        taken: set[int] = set()
        for y, x in at:
            near = regions[max(0, y - 1) : max(0, y + 2), max(0, x - 1) : max(0, x + 2)]
            taken.update(int(k) for k in np.unique(near[near > 0]))
        if taken:
            take |= np.isin(regions, sorted(taken))
    out[take] = answer[take]
    return out


# How a click tilts the model's answer near it (``honour_clicks``): the logit added at the click besides
# the model's disagreement, the Gaussian's width as a multiple of the room the click had, and the
# widest it gets. Chosen with Kvasir models from the loop benchmark, on that run's images not yet
# labelled (same model and proposals, NoC@90 and Dice after 1/3/5 clicks; docs/benchmarks.md): (3, 1)
# was never worse than no tilt (NoC@90 6.46 vs 6.46 and 3.14 vs 3.43), a stronger (6, 2) overshot
# with the better model (4.57 vs 3.43). Adding the disagreement and capping the width at 48 working
# px (the planned median object is ~48 px wide, ml/planning.py) took NoC@90 from 8.27 to 7.87 and
# from 6.90 to 6.53 on two more models: without them a positive click on an object the model was sure
# was background changed one pixel, and one in an empty window lifted the whole window a little.
CLICK_PULL = 3.0
CLICK_REACH_FACTOR = 1.0
CLICK_REACH_MAX = 48.0


def click_room(previous: np.ndarray | None, point: tuple[int, int], shape: tuple[int, int]) -> float:
    """The room a click had: the distance from ``point`` (y, x) to the nearest pixel of another class in
    ``previous`` (the mask being corrected, of ``shape``), or to the border when there is none; ~1e38
    when ``previous`` holds one class only (callers cap it)."""
    py, px = point
    h, w = shape
    if previous is None:
        return float(min(py, px, h - 1 - py, w - 1 - px))
    same = (previous == previous[py, px]).astype(np.uint8)
    return float(cv2.distanceTransform(same, cv2.DIST_L2, 5)[py, px])


def honour_clicks(probabilities: np.ndarray, points: Sequence[tuple[int, int]], clicks: Sequence[Click],
                  previous: np.ndarray | None) -> np.ndarray:
    """Probabilities (C x h x w, background first) tilted toward what each click says near it: the
    clicked class's logit gains (positive) or loses (negative) a pull that falls off as a Gaussian of
    the distance to the click. At the click the pull is CLICK_PULL plus whatever the model's answer
    there disagreed with the click by, so the click wins its own neighbourhood even where the model
    was sure of the opposite; further out the model's probabilities shape the edge. The Gaussian's
    width is CLICK_REACH_FACTOR x the room the click had: the distance from the click to the nearest
    pixel of another class in ``previous`` (the mask the user corrected; the window's border if it
    has none), between CLICK_RADIUS and CLICK_REACH_MAX. ``points``: the clicks at this array's
    pixels. Returns a new array."""
    out = probabilities.astype(np.float32, copy=True)
    h, w = out.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for (py, px), click in zip(points, clicks):
        c = int(click.class_number)
        if not (0 <= py < h and 0 <= px < w and 1 <= c < out.shape[0]):
            continue
        reach = CLICK_REACH_FACTOR * min(max(click_room(previous, (py, px), (h, w)), float(CLICK_RADIUS)),
                                         CLICK_REACH_MAX)
        logits = np.log(np.maximum(out[:, py, px], 1e-12))
        others = float(np.delete(logits, c).max())
        disagreement = max(0.0, (others - logits[c]) if click.positive else (logits[c] - others))
        pull = (CLICK_PULL + disagreement) * np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * reach**2))
        out[c] *= np.exp(pull if click.positive else -pull)
        out /= out.sum(axis=0, keepdims=True)  # the next click's disagreement is read from this answer
    return out
