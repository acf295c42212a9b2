"""Which image to label next: the next in the project's order, or the one the model is least sure of.

"Least sure first" is active learning as MONAI Label offers it: the user's effort goes where the
model learns most. It ranks the images not yet accepted by the ``uncertainty`` stored with their
cached proposal (segdesk.ml.uncertainty, written by the inference worker), counting only proposals
made by the checkpoint that proposes now (older ones say how unsure an older model was). Images
without such a score come after every scored one, in the project's order after the current image,
so with no model yet, or nothing scored, "least sure first" is "in order".

The choice is a setting of the project (``project.json`` settings, ``"next_image"``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from segdesk.core.errors import SegdeskError
from segdesk.core.project import STATUS_ACCEPTED, Project, proposal_meta_path, read_proposal_meta

log = logging.getLogger(__name__)

ORDER_KEY = "next_image"
IN_ORDER = "in order"
UNCERTAIN = "uncertain"
ORDERS = (IN_ORDER, UNCERTAIN)


def order_of(project: Project) -> str:
    """The project's setting; "in order" when unset or not one of ``ORDERS`` (a hand-edited file)."""
    value = project.settings.get(ORDER_KEY, IN_ORDER)
    if value not in ORDERS:
        log.warning("ignoring setting %s=%r: it must be one of %s", ORDER_KEY, value, ", ".join(ORDERS))
        return IN_ORDER
    return value


def set_order(project: Project, order: str) -> None:
    """Store the setting in project.json; ValueError for an unknown order, SegdeskError when the
    file cannot be written (the setting then holds in memory until the project is closed)."""
    if order not in ORDERS:
        raise ValueError(f"unknown next-image order {order!r}; one of {', '.join(ORDERS)}")
    project.settings[ORDER_KEY] = order
    project.save()


def upcoming(project: Project, after: str | None) -> list[str]:
    """Ids of the images not accepted, in the project's order after ``after`` (wrapping around),
    ``after`` itself excluded; from the first image when ``after`` is None."""
    ids = [e.id for e in project.images]
    start = ids.index(after) + 1 if after in ids else 0
    return [i for i in ids[start:] + ids[:start]
            if i != after and project.image(i).status != STATUS_ACCEPTED]


class Scores:
    """Stored uncertainties of cached proposals, read from proposals/<id>.json. A file is read
    again only when its size or time changed, so asking on every image switch of a large project
    costs one ``stat`` per image, not one read (the inference worker writes these files).
    ``proposals_dir``: the project's proposals/ folder (no Project needed: a reader thread uses it)."""

    def __init__(self, proposals_dir: Path):
        self._folder = Path(proposals_dir)
        self._seen: dict[str, tuple[tuple[int, int, int], dict | None]] = {}

    def meta(self, image_id: str) -> dict | None:
        """The proposal's metadata (read_proposal_meta), or None."""
        path = proposal_meta_path(self._folder, image_id)
        try:
            st = os.stat(path)
        except OSError:
            self._seen.pop(image_id, None)
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)  # an atomic rewrite is a new inode
        seen = self._seen.get(image_id)
        if seen is None or seen[0] != key:
            seen = (key, read_proposal_meta(self._folder, image_id))
            self._seen[image_id] = seen
        return seen[1]

    def of(self, image_ids: list[str], checkpoint: str | None) -> dict[str, float]:
        """Uncertainty of each image's cached proposal made by ``checkpoint``; images without one
        are left out (and every image when ``checkpoint`` is None: no model proposes)."""
        if checkpoint is None:
            return {}
        out = {}
        for image_id in image_ids:
            try:
                meta = self.meta(image_id)
            except SegdeskError:
                continue
            if meta and meta.get("checkpoint") == checkpoint and meta.get("uncertainty") is not None:
                out[image_id] = float(meta["uncertainty"])
        return out


def choose(project: Project, after: str | None, order: str, checkpoint: str | None,
           scores: Scores | None = None) -> str | None:
    """The image to label after ``after``: None when every other image is accepted. ``scores``:
    a Scores kept between calls (a fresh one otherwise)."""
    candidates = upcoming(project, after)
    if order != UNCERTAIN or not candidates:
        return candidates[0] if candidates else None
    known = (scores or Scores(project.root / "proposals")).of(candidates, checkpoint)
    if not known:
        return candidates[0]
    position = {image_id: n for n, image_id in enumerate(candidates)}
    # the highest score; among equal scores the first in the project's order after ``after``
    return max(known, key=lambda i: (known[i], -position[i]))
