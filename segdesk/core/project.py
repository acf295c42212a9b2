"""A project: one folder holding the image list, labels, models and settings of one labelling job.

Layout (DESIGN.md "Project on disk")::

    project.json    schema version, classes, images (source path, content hash, status), settings
    labels/         <image id>.png, 0 = not labelled, 1 = background, 2.. = classes
    proposals/      disposable cache of model proposals
    models/         immutable numbered checkpoints and a pointer to the current one
    log.jsonl       append-only log of user actions and training metrics
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from segdesk.core import encoding, imageio, project_schema, storage
from segdesk.core.errors import ImageReadError, LabelError, ProjectError, SegdeskError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PROJECT_FILE = "project.json"
MAX_CLASSES = 16

STATUS_NEW = "new"
STATUS_IN_PROGRESS = "in progress"
STATUS_ACCEPTED = "accepted"
STATUSES = (STATUS_NEW, STATUS_IN_PROGRESS, STATUS_ACCEPTED)

# Distinct, colour-blind-friendly defaults (Wong / Tableau), used in order for new classes.
DEFAULT_COLOURS = (
    "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#ff4d4d",
    "#9467bd", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8", "#98df8a", "#ff9896",
)
_COLOUR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass
class LabelClass:
    """A named, coloured structure to label; numbered from 1 in the project's order (segdesk.core.encoding)."""

    name: str
    color: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        return tuple(int(self.color[i:i + 2], 16) for i in (1, 3, 5))


@dataclass
class ImageEntry:
    id: str
    source: str
    sha256: str
    width: int
    height: int
    status: str = STATUS_NEW
    accepted_at: float | None = None
    seconds_spent: float = 0.0
    frame: int | None = None  # 0-based frame of a multi-frame DICOM file; None for other images

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)


@dataclass
class AddReport:
    added: list[ImageEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    empty_folders: list[str] = field(default_factory=list)  # folders given that hold no image file
    cancelled: bool = False


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _image_id(path: Path, sha: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem)[:40].strip("._") or "image"
    return f"{stem}-{sha[:8]}"


def make_classes(names: Iterable[str]) -> list[LabelClass]:
    classes = []
    for i, name in enumerate(names):
        name = name.strip()
        if not name:
            raise ProjectError("A class name must not be empty.")
        classes.append(LabelClass(name, DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)]))
    return classes


def _check_classes(classes: list[LabelClass]) -> None:
    if not 1 <= len(classes) <= MAX_CLASSES:
        raise ProjectError(f"A project needs 1 to {MAX_CLASSES} classes, not {len(classes)}.")
    names = [c.name.lower() for c in classes]
    if len(set(names)) != len(names):
        raise ProjectError("Class names must be different from each other.")
    if "background" in names:
        raise ProjectError("'background' is built in (class number 0); do not add it as a class.")
    for c in classes:
        if not _COLOUR_RE.match(c.color):
            raise ProjectError(f"Class '{c.name}' has colour {c.color!r}; use #rrggbb.")


class Project:
    """The open project. Every change is written to disk atomically before the method returns."""

    def __init__(self, root: Path, data: dict):
        self.root = root
        self.name: str = data.get("name") or root.name
        self.classes: list[LabelClass] = [LabelClass(**c) for c in data["classes"]]
        self.images: list[ImageEntry] = [ImageEntry(**e) for e in data.get("images", [])]
        self.settings: dict = dict(data.get("settings", {}))
        self._by_id = {e.id: e for e in self.images}

    # ----- create / open / save

    @classmethod
    def create(cls, root: str | os.PathLike, classes: Iterable[str | LabelClass]) -> "Project":
        root = Path(root).expanduser().resolve()
        items = list(classes)
        label_classes = [c if isinstance(c, LabelClass) else None for c in items]
        if any(c is None for c in label_classes):
            label_classes = make_classes(c if isinstance(c, str) else c.name for c in items)
        _check_classes(label_classes)
        if (root / PROJECT_FILE).exists():
            raise ProjectError(f"{root} already holds a project; open it instead.")
        try:
            root.mkdir(parents=True, exist_ok=True)
            for sub in ("labels", "proposals", "models"):
                (root / sub).mkdir(exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"Could not create project folder {root}: {exc.strerror or exc}.") from exc
        project = cls(root, {"name": root.name, "classes": [asdict(c) for c in label_classes]})
        project.save()
        project.log_event("project_created", classes=[c.name for c in label_classes])
        return project

    @classmethod
    def open(cls, root: str | os.PathLike, clean: bool = True) -> "Project":
        """Open a project. ``clean`` removes crash temporaries: only the owner (the app or CLI) may;
        a reader such as the training worker passes False so it never deletes a write in flight."""
        root = Path(root).expanduser().resolve()
        path = root / PROJECT_FILE
        if not path.is_file():
            raise ProjectError(f"{root} is not a segdesk project (no {PROJECT_FILE}).")
        try:
            if path.stat().st_size > project_schema.MAX_PROJECT_BYTES:
                raise ProjectError(f"{path} is {path.stat().st_size / 2**20:.0f} MB, too large for a segdesk "
                                   "project file; it is damaged or not a project file.")
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ProjectError(f"{path} is unreadable or not valid JSON: {exc}.") from exc
        if not isinstance(data, dict) or not isinstance(data.get("schema"), int):
            raise ProjectError(f"{path} has no schema version; it is not a segdesk project file.")
        if data["schema"] > SCHEMA_VERSION:
            raise ProjectError(
                f"{path} was written by a newer segdesk (schema {data['schema']}); please update segdesk."
            )
        data = project_schema.check(data, imageio.MAX_PIXELS)  # ProjectError naming the bad field
        try:
            project = cls(root, data)
            _check_classes(project.classes)
            for e in project.images:
                if e.status not in STATUSES:
                    raise ValueError(f"image {e.id} has unknown status {e.status!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ProjectError(f"{path} is damaged: {exc}.") from exc
        if clean:
            project.clean_up()
        return project

    def clean_up(self) -> None:
        """Create missing subfolders and remove crash temporaries outside models/. Only the holder
        of the labels lock may (a temporary may be another's write in flight); models/ is the
        models lock holder's to clean (``clean_models``), since a trainer elsewhere may be writing."""
        try:
            for sub in ("labels", "proposals", "models"):
                (self.root / sub).mkdir(exist_ok=True)
        except OSError as exc:
            raise ProjectError(f"Could not create folders in {self.root}: {exc.strerror or exc}.") from exc
        storage.clean_temporaries(self.root, skip=("models",))

    def clean_models(self) -> None:
        """Remove crash temporaries in models/; only the holder of the models lock may."""
        storage.clean_temporaries(self.root / "models")

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA_VERSION,
            "name": self.name,
            "classes": [asdict(c) for c in self.classes],
            "images": [asdict(e) for e in self.images],
            "settings": self.settings,
        }

    def save(self) -> None:
        storage.atomic_write_json(self.root / PROJECT_FILE, self.to_json())

    def log_event(self, kind: str, **data) -> None:
        """Append one event to log.jsonl. Logging never stops the user's work."""
        record = {"t": round(time.time(), 3), "event": kind, **data}
        try:
            storage.append_line(self.root / "log.jsonl", json.dumps(record))
        except SegdeskError as exc:
            log.warning("%s", exc)

    # ----- images

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def image(self, image_id: str) -> ImageEntry:
        try:
            return self._by_id[image_id]
        except KeyError:
            raise ProjectError(f"No image {image_id!r} in this project.") from None

    def add_entries(self, entries: list[ImageEntry]) -> None:
        """Take entries made by ``add_images`` on a copy of this project (images added off the GUI
        thread: segdesk.qt.image_adder), as its own ``add_images`` would have; not saved here."""
        for entry in entries:
            if entry.id in self._by_id:
                raise ProjectError(f"Image {entry.id!r} is already in this project.")
            self.images.append(entry)
            self._by_id[entry.id] = entry

    def source_path(self, entry: ImageEntry) -> Path:
        p = Path(entry.source)
        return p if p.is_absolute() else self.root / p

    def read_image(self, entry: ImageEntry) -> imageio.Image:
        return imageio.read_image(self.source_path(entry), frame=entry.frame)

    def add_images(self, paths: Iterable[str | os.PathLike],
                   progress: Callable[[int, int], bool] | None = None, save: bool = True) -> AddReport:
        """Add files and whole folders (recursively). Unreadable files are skipped with a reason.
        ``save`` False: the caller stores project.json and logs the addition (the app's one
        writer of project.json does, off the GUI thread: segdesk.qt.project_writer).

        ``progress(done, total)`` is called before each file; when it returns False the adding
        stops, and what was added so far is kept.
        """
        report = AddReport()
        from segdesk.core import dicom, dicom_series  # pydicom only when adding images

        known = {(e.sha256, e.frame) for e in self.images}
        hashed = functools.lru_cache(maxsize=4)(file_sha256)  # frames of one file: hashed once
        failed: set[Path] = set()
        sources = list(dicom_series.order_sources(_expand(paths, report)))
        for done, (path, frame) in enumerate(sources):
            if progress is not None and not progress(done, len(sources)):
                report.cancelled = True
                break
            if path in failed:  # a multi-frame file that cannot be read: reported once
                continue
            try:
                img = imageio.read_image(path, frame=frame)
                sha = hashed(path)
            except ImageReadError as exc:
                report.skipped.append((str(path), str(exc)))
                failed.add(path)
                continue
            except OSError as exc:
                report.skipped.append((str(path), f"could not read: {exc.strerror or exc}"))
                continue
            if (sha, frame) in known:
                report.skipped.append((str(path), "already in the project"))
                continue
            if isinstance(img, dicom.DicomImage):  # never from the file name: it may hold a patient name
                image_id = dicom.image_id(img, sha, self._by_id)
            else:
                image_id = _image_id(path, sha)
            source = path.resolve()
            try:
                source_str = str(source.relative_to(self.root))
            except ValueError:
                source_str = str(source)
            entry = ImageEntry(image_id, source_str, sha, img.width, img.height, frame=frame)
            self.images.append(entry)
            self._by_id[image_id] = entry
            known.add((sha, frame))
            report.added.append(entry)
        if report.added and save:
            self.save()
            self.log_event("images_added", count=len(report.added))
        for path, reason in report.skipped:
            log.info("skipped %s: %s", path, reason)
        return report

    # ----- labels

    def label_path(self, image_id: str) -> Path:
        return self.root / "labels" / f"{image_id}.png"

    def read_label(self, image_id: str) -> np.ndarray | None:
        """The stored label of an image, or None if it has none. LabelError if it does not fit."""
        entry = self.image(image_id)
        path = self.label_path(image_id)
        if not path.exists():
            return None
        return storage.read_label(path, entry.shape, self.n_classes)

    def save_label(self, image_id: str, label: np.ndarray) -> None:
        """Store the user's label (corrections: painted pixels, 0 elsewhere)."""
        entry = self.image(image_id)
        self._check_label(entry, label)
        storage.write_label(self.label_path(image_id), label)
        self.label_saved(image_id, bool(label.any()), encoding.has_unlabelled(label))

    def label_saved(self, image_id: str, painted: bool, has_unlabelled: bool) -> None:
        """Update an image's status after its label file was written.

        An accepted image stays accepted while it has no unlabelled pixel; erasing part of it makes
        it "in progress" again until the user accepts it anew.
        """
        entry = self.image(image_id)
        if entry.status == STATUS_ACCEPTED and not has_unlabelled:
            return
        status = STATUS_IN_PROGRESS if painted or entry.status == STATUS_ACCEPTED else STATUS_NEW
        if status != entry.status:
            entry.status = status
            self.save()

    def accept(self, image_id: str, label: np.ndarray, seconds_spent: float = 0.0,
               proposal_checkpoint: str | None = None, in_place: bool = False) -> np.ndarray:
        """The user says the mask is right: unlabelled pixels become background. Returns the label.
        ``in_place``: ``label`` is the caller's to give away and becomes the stored label (a large
        label is not copied once more).

        The log records how long the user spent on the image and which checkpoint proposed.
        """
        entry = self.image(image_id)
        self._check_label(entry, label)
        if in_place and label.flags.c_contiguous and label.flags.writeable:
            encoding.merge_accept_into(label)
            accepted = label
        else:
            accepted = encoding.merge_accept(label)
        storage.write_label(self.label_path(image_id), accepted)
        before = (entry.status, entry.accepted_at, entry.seconds_spent)
        entry.status = STATUS_ACCEPTED
        entry.accepted_at = round(time.time(), 3)
        entry.seconds_spent = round(entry.seconds_spent + seconds_spent, 2)
        try:
            self.save()
        except SegdeskError:  # project.json not written: in memory too, the image is not accepted
            entry.status, entry.accepted_at, entry.seconds_spent = before
            raise
        self.log_event("accepted", image=image_id, seconds=round(seconds_spent, 2),
                       proposal_checkpoint=proposal_checkpoint)
        return accepted

    def _check_label(self, entry: ImageEntry, label: np.ndarray) -> None:
        if label.shape != entry.shape or label.dtype != np.uint8:
            raise LabelError(
                f"Label for {entry.id} is {label.dtype} {label.shape}, expected uint8 {entry.shape}."
            )
        if label.size and int(label.max()) > encoding.max_label_value(self.n_classes):
            raise LabelError(f"Label for {entry.id} uses a class the project does not have.")

    # ----- proposals (a disposable cache; never training data by itself)

    def proposal_path(self, image_id: str) -> Path:
        return _proposal_file(self.root / "proposals", image_id)

    def save_proposal(self, image_id: str, label: np.ndarray, checkpoint: str | None,
                      uncertainty: float | None = None) -> None:
        """Store a proposal (label encoding, 1 = background), the checkpoint that made it and how
        unsure it was (``write_proposal``)."""
        entry = self.image(image_id)
        self._check_label(entry, label)
        write_proposal(self.root / "proposals", image_id, label, checkpoint, uncertainty=uncertainty)

    def read_proposal(self, image_id: str) -> tuple[np.ndarray, dict] | None:
        """The cached proposal and its metadata, or None when absent or unreadable."""
        entry = self.image(image_id)
        path = self.proposal_path(image_id)
        try:
            label = storage.read_label(path, entry.shape, self.n_classes)
        except (SegdeskError, OSError, ValueError):
            return None
        meta = self.proposal_meta(image_id)
        return None if meta is None else (label, meta)

    def proposal_meta(self, image_id: str) -> dict | None:
        """The cached proposal's metadata only (checkpoint, time, ``uncertainty`` when known), or
        None when absent or unreadable; a small file, cheap enough to read for every image."""
        return read_proposal_meta(self.root / "proposals", self.image(image_id).id)

    def next_unaccepted(self, image_id: str) -> str | None:
        """The first image after ``image_id`` (wrapping around) that is not accepted yet."""
        ids = [e.id for e in self.images]
        start = ids.index(image_id)
        return next((i for i in ids[start + 1:] + ids[:start] if self._by_id[i].status != STATUS_ACCEPTED), None)

    def accepted_ids(self) -> list[str]:
        return [e.id for e in self.images if e.status == STATUS_ACCEPTED]


def _proposal_file(proposals_dir: Path, image_id: str) -> Path:
    return proposals_dir / f"{image_id}.png"


def proposal_meta_path(proposals_dir: Path, image_id: str) -> Path:
    """Where a proposal's metadata (checkpoint, time, uncertainty) is stored."""
    return _proposal_file(Path(proposals_dir), image_id).with_suffix(".json")


def write_proposal(proposals_dir: Path, image_id: str, label: np.ndarray, checkpoint: str | None,
                   learning: bool = False, uncertainty: float | None = None) -> None:
    """``Project.save_proposal`` without the project: writes the proposal's two files and reads no
    project state, so the inference worker's thread may call it (the GUI thread owns the open
    Project). The caller vouches that the label fits the image. ``learning``: made by a model that
    withholds its proposals, and shown on request. ``uncertainty``: how unsure the model was
    (segdesk.ml.uncertainty), for choosing the next image; a number in [0, 1]."""
    if uncertainty is not None and not (isinstance(uncertainty, (int, float)) and 0.0 <= uncertainty <= 1.0):
        raise ValueError(f"uncertainty must be a number in [0, 1], not {uncertainty!r}")
    path = _proposal_file(Path(proposals_dir), image_id)
    storage.write_label(path, label)
    meta = {"image": image_id, "checkpoint": checkpoint, "time": round(time.time(), 3)}
    if learning:
        meta["learning"] = True
    if uncertainty is not None:
        meta["uncertainty"] = round(float(uncertainty), 4)
    storage.atomic_write_json(path.with_suffix(".json"), meta)


def read_proposal_meta(proposals_dir: Path, image_id: str) -> dict | None:
    """A proposal's metadata, or None when absent, unreadable or not an object. A damaged
    ``uncertainty`` (not a number in [0, 1]) is dropped: the file is a disposable cache."""
    path = proposal_meta_path(proposals_dir, image_id)
    try:
        if path.stat().st_size > 1 << 16:  # a few hundred bytes when segdesk wrote it
            return None
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(meta, dict):
        return None
    u = meta.get("uncertainty")
    if u is not None and (isinstance(u, bool) or not isinstance(u, (int, float)) or not 0.0 <= u <= 1.0):
        log.warning("proposal %s: ignoring uncertainty %r", image_id, u)
        del meta["uncertainty"]
    return meta


def _expand(paths: Iterable[str | os.PathLike], report: AddReport) -> list[Path]:
    from segdesk.core import dicom_series

    files: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            found = [f for f in sorted(p.rglob("*"))
                     if f.is_file() and (f.suffix.lower() in imageio.SUPPORTED_SUFFIXES
                                         or dicom_series.looks_like_dicom(f))]
            if not found:
                report.empty_folders.append(str(p))
            files += found
        elif p.is_file():
            files.append(p)
        else:
            report.skipped.append((str(p), "no such file or folder"))
    return files
