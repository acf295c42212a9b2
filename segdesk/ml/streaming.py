"""Proposals for images too large to hold as float32: a band of tile rows at a time.

The ordinary path (inference.py) normalises the whole image as float32 (12 bytes a pixel, and a
transposed copy), blends the tiles' probabilities over the whole working image (4 bytes a pixel a
class, plus the weights) and returns a float32 confidence: about 40 bytes a pixel, 16 GB for a
20,000 x 20,000 image. Here the image's normalisation range comes from a subsample
(``normalise.image_range``, the same values the ordinary path uses), each row of tiles is normalised
as it is cut, and the blended probabilities are finished row by row: rows above the next row of
tiles get no more tiles, so they are resized to the image's size, turned into classes and dropped.
What stays is the image itself, its classes (1 byte a pixel), the blended probabilities of one band
(the tile's height times the working width) and the tiles of one forward pass.

At a working scale other than 1 the image's raw pixels are resized first and normalised after (the
ordinary path normalises first); the two differ only where the 0.5% brightest or darkest pixels
are averaged with others.
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from segdesk.ml.normalise import image_range, normalise_with
from segdesk.ml.planning import ScaleRule
from segdesk.ml.uncertainty import UncertaintySum

# dtypes OpenCV resizes; others are converted to float32 first
_RESIZABLE = (np.uint8, np.uint16, np.int16, np.float32, np.float64)


class WorkingSource:
    """An image at working resolution, normalised on demand, a rectangle at a time."""

    def __init__(self, pixels: np.ndarray, scale_rule: ScaleRule):
        pixels = np.asarray(pixels)
        if pixels.ndim == 3 and pixels.shape[2] > 3:
            pixels = pixels[:, :, :3]  # an alpha channel is dropped, as normalise.py does
        self.low, self.high = image_range(pixels)
        self.size = scale_rule.working_size(*pixels.shape[:2])
        if self.size != pixels.shape[:2]:
            if pixels.dtype.type not in _RESIZABLE:
                pixels = pixels.astype(np.float32)
            pixels = scale_rule.resize(np.ascontiguousarray(pixels))
        self.raw = pixels  # the image's own pixels at working size (the image itself at scale 1)

    def rectangle(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        """3 x (y1 - y0) x (x1 - x0) float32 model input."""
        part = normalise_with(self.raw[y0:y1, x0:x1], self.low, self.high)
        return np.ascontiguousarray(part.transpose(2, 0, 1))


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Where overlapping tiles of ``tile`` pixels start along a side of ``length`` (the last one ends
    at the edge); the one rule for whole-image (tiling.tile_boxes) and streamed proposals."""
    if length <= tile:
        return [0]
    step = max(1, tile - int(tile * overlap))
    return list(range(0, length - tile, step)) + [length - tile]


def working_rows(source: WorkingSource, run: Callable[[torch.Tensor], torch.Tensor], extra_channels: int,
                 tile: int, tile_batch: int, overlap: float, window: Callable[[int, int], torch.Tensor],
                 device: torch.device) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, C x rows x w probabilities) of the working image, in order, each row finished:
    overlapping tiles (as tiling.tile_boxes cuts them) blended by ``window``. ``run`` maps a batch
    of inputs (3 + ``extra_channels`` channels; the extra ones zero) to logits.

    One band of ``tile`` rows is reused: a yielded part is valid until the next one is asked for (a
    consumer keeping rows copies them). Growing a new band beside the old one for each row of tiles
    held two bands at once, 0.12 GB more at 20,000 px."""
    h, w = source.size
    th, tw = min(tile, h), min(tile, w)
    rows = tile_starts(h, th, overlap)
    columns = tile_starts(w, tw, overlap)
    blend = window(th, tw)
    total = weight = None
    base = 0  # the working row total[:, 0] stands for
    for i, y in enumerate(rows):
        for j in range(0, len(columns), tile_batch):
            chunk = columns[j : j + tile_batch]
            # each tile normalised as it is cut: a whole band's float copies were 0.3 GB at 20,000 px
            batch = torch.from_numpy(np.stack([source.rectangle(y, y + th, x, x + tw) for x in chunk])).to(device)
            if extra_channels:
                batch = torch.cat([batch, batch.new_zeros((len(chunk), extra_channels, th, tw))], dim=1)
            logits = run(batch)
            probs = logits.float().softmax(dim=1)
            if total is None:
                total = probs.new_zeros((probs.shape[1], th, w))
                weight = probs.new_zeros((th, w))
            for x, p in zip(chunk, probs):  # the band starts at this row of tiles (base == y)
                total[:, :, x : x + tw] += p * blend
                weight[:, x : x + tw] += blend
        done = rows[i + 1] if i + 1 < len(rows) else h  # no later tile reaches above this row
        finished = done - base
        yield base, total[:, :finished].div_(weight[:finished])  # in place: these rows get no more tiles
        if i + 1 < len(rows):  # the rows the next row of tiles shares move to the band's top
            rest = th - finished
            total[:, :rest] = total[:, finished:].clone() if rest > finished else total[:, finished:]
            weight[:rest] = weight[finished:].clone() if rest > finished else weight[finished:]
            total[:, rest:] = 0
            weight[rest:] = 0
        base = done


def full_size_rows(parts: Iterator[tuple[int, torch.Tensor]], working: tuple[int, int],
                   size: tuple[int, int], strip_pixels: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, C x rows x width probabilities) at the image's ``size``, in order, from working rows
    in order: bilinear with half-pixel centres (as F.interpolate), rows here and columns by
    F.interpolate, a strip of at most ``strip_pixels`` values at a time (at the working size too:
    the classes and confidence taken from a strip hold 12 bytes a pixel)."""
    if tuple(working) == tuple(size):
        for first, part in parts:
            step = _strip_rows(strip_pixels, part.shape[-1], part.shape[0])
            for top in range(0, part.shape[1], step):
                yield first + top, part[:, top : top + step]
        return
    h0, _ = working
    height, width = size
    kept: torch.Tensor | None = None  # working rows kept_from.. not yet used up
    kept_from = 0
    y = 0
    for first, part in parts:
        kept = part.clone() if kept is None else torch.cat([kept, part], dim=1)  # ``part``'s band is reused
        available = first + part.shape[1]  # working rows < available are known
        while y < height:
            n = kept.shape[0]
            rows = _strip_rows(strip_pixels, width, n)
            y1 = min(height, y + rows)
            src = ((torch.arange(y, y1, dtype=torch.float64) + 0.5) * (h0 / height) - 0.5).clamp(min=0)
            top = src.floor().long().clamp(max=h0 - 1)
            bottom = (top + 1).clamp(max=h0 - 1)
            if int(bottom[-1]) >= available:  # fewer rows: as many as the known working rows allow
                fits = int((bottom < available).sum())
                if fits == 0:
                    break
                y1, src, top, bottom = y + fits, src[:fits], top[:fits], bottom[:fits]
            local_top, local_bottom = (top - kept_from).to(kept.device), (bottom - kept_from).to(kept.device)
            weight = (src - top).to(kept.dtype).to(kept.device)[None, :, None]
            strip = kept[:, local_top] * (1 - weight) + kept[:, local_bottom] * weight
            if strip.shape[-1] != width:
                strip = F.interpolate(strip[None], size=(y1 - y, width), mode="bilinear", align_corners=False)[0]
            yield y, strip
            y = y1
            drop = int(top[-1]) - kept_from  # rows above the last strip's top are not needed again
            if drop > 0:
                kept, kept_from = kept[:, drop:], kept_from + drop


def _strip_rows(strip_pixels: int, width: int, channels: int) -> int:
    """Rows of a strip of ``channels`` x rows x ``width`` float32 values in ``strip_pixels`` bytes."""
    return max(1, strip_pixels // (4 * width * channels))


def classes_of(parts: Iterator[tuple[int, torch.Tensor]], size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """uint8 classes of an image from its full-size probability strips, and the proposal's
    uncertainty (uncertainty.py), without keeping the confidence of every pixel."""
    classes = np.empty(size, np.uint8)
    unsure = UncertaintySum()
    for y, strip in parts:
        confidence, winner = strip.max(dim=0)
        strip_classes = winner.to(torch.uint8).cpu().numpy()
        classes[y : y + strip_classes.shape[0]] = strip_classes
        unsure.add(strip_classes, confidence.float().cpu().numpy())
    return classes, unsure.value()


class NormalisedImage:
    """A whole normalised working input (3 x h x w), offering ``WorkingSource.rectangle``."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.size = tuple(x.shape[1:])

    def rectangle(self, y0: int, y1: int, x0: int = 0, x1: int | None = None) -> np.ndarray:
        return self.x[:, y0:y1, x0:x1]


def nearest_crop(mask: np.ndarray, working: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """``box`` (y0, x0, y1, x1) of ``mask`` resized to ``working`` (h, w) with nearest neighbours:
    the same pixels as that part of ``cv2.resize(mask, (w, h), interpolation=INTER_NEAREST)``,
    without resizing the whole mask."""
    height, width = mask.shape[:2]
    h, w = working
    y0, x0, y1, x1 = box
    if (h, w) == (height, width):
        return mask[y0:y1, x0:x1]
    rows = np.minimum(np.floor(np.arange(y0, y1) * (1.0 / (h / height))).astype(np.int64), height - 1)
    columns = np.minimum(np.floor(np.arange(x0, x1) * (1.0 / (w / width))).astype(np.int64), width - 1)
    return mask[np.ix_(rows, columns)]
