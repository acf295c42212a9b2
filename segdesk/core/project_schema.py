"""Checks a parsed project.json before a Project is built from it.

project.json is user-reachable (copied, synced, hand-edited, damaged): every field the app relies
on is checked for type and range here, so a bad file is refused with a ProjectError saying which
field is wrong, instead of crashing later in the window or the trainer. Image ids become file
names (``labels/<id>.png``), so they must be plain names: a crafted id cannot write outside the
project. Unknown keys are kept; a bad value of a known setting is dropped (with a warning) rather
than refusing the whole project.
"""

from __future__ import annotations

import logging
import math
import re

from segdesk.core.errors import ProjectError

log = logging.getLogger(__name__)

MAX_PROJECT_BYTES = 256 * 2**20  # ~1M images; larger is a damaged or foreign file
MAX_SIDE = 1 << 20
MAX_NAME = 200
_ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")  # no leading dot: no ".."
_IMAGE_KEYS = {"id", "source", "sha256", "width", "height", "status", "accepted_at", "seconds_spent", "frame"}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _fail(where: str, problem: str) -> ProjectError:
    return ProjectError(f"project.json is damaged: {where} {problem}.")


def check_settings(settings: dict) -> dict:
    """Known settings with a usable value; bad values are dropped with a warning."""
    cleaned = dict(settings)
    auto = cleaned.get("auto_train_after")
    if auto is not None and not (_is_int(auto) and 1 <= auto <= 1_000_000):
        log.warning("ignoring setting auto_train_after=%r: it must be a whole number from 1", auto)
        del cleaned["auto_train_after"]
    scale = cleaned.get("working_scale")
    if scale is not None and not (_is_number(scale) and 0 < float(scale) <= 1):
        log.warning("ignoring setting working_scale=%r: it must be a number in (0, 1]", scale)
        del cleaned["working_scale"]
    return cleaned


def check(data: dict, max_pixels: int) -> dict:
    """Raise ProjectError naming the first bad field; return ``data`` with settings cleaned."""
    schema = data.get("schema")
    if not _is_int(schema) or schema < 1:
        raise _fail("the schema version", f"is {schema!r}, not a positive whole number")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise _fail("the project name", f"is {type(name).__name__}, not text")

    classes = data.get("classes")
    if not isinstance(classes, list):
        raise _fail("'classes'", "is not a list")
    for i, c in enumerate(classes):
        if not isinstance(c, dict):
            raise _fail(f"class {i + 1}", "is not an object")
        if not isinstance(c.get("name"), str) or not c["name"].strip() or len(c["name"]) > MAX_NAME:
            raise _fail(f"class {i + 1}", f"has name {c.get('name')!r}; a class needs a short non-empty name")
        if not isinstance(c.get("color"), str):
            raise _fail(f"class {c['name']!r}", f"has colour {c.get('color')!r}, not #rrggbb")

    images = data.get("images", [])
    if not isinstance(images, list):
        raise _fail("'images'", "is not a list")
    seen: set[str] = set()
    for i, e in enumerate(images):
        where = f"image {i + 1}"
        if not isinstance(e, dict):
            raise _fail(where, "is not an object")
        image_id = e.get("id")
        if not isinstance(image_id, str) or not _ID_RE.match(image_id):
            raise _fail(where, f"has id {image_id!r}; ids are plain file names (letters, digits, _ . -)")
        where = f"image {image_id}"
        if image_id in seen:
            raise _fail(where, "is listed twice")
        seen.add(image_id)
        missing = {"id", "source", "sha256", "width", "height"} - e.keys()
        if missing:
            raise _fail(where, f"lacks {', '.join(sorted(missing))}")
        unknown = e.keys() - _IMAGE_KEYS
        if unknown:
            raise _fail(where, f"has unknown fields {', '.join(sorted(map(str, unknown)))}")
        if not isinstance(e["source"], str) or not e["source"] or "\0" in e["source"]:
            raise _fail(where, f"has source {e['source']!r}, not a file path")
        if not isinstance(e["sha256"], str):
            raise _fail(where, "has a content hash that is not text")
        w, h = e["width"], e["height"]
        if not (_is_int(w) and _is_int(h) and 1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE and w * h <= max_pixels):
            raise _fail(where, f"has size {w!r} x {h!r}, not a possible image size")
        if "accepted_at" in e and e["accepted_at"] is not None and not _is_number(e["accepted_at"]):
            raise _fail(where, f"has accepted_at {e['accepted_at']!r}, not a time")
        frame = e.get("frame")
        if frame is not None and not (_is_int(frame) and frame >= 0):
            raise _fail(where, f"has frame {frame!r}, not a frame number from 0")
        spent = e.get("seconds_spent", 0.0)
        if not _is_number(spent) or spent < 0:
            raise _fail(where, f"has seconds_spent {spent!r}, not a duration")

    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise _fail("'settings'", "is not an object")
    return {**data, "settings": check_settings(settings)}
