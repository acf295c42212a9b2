"""The app's one writer of project.json and label files: every write in order, off the GUI thread.

The GUI thread owns the open Project (DESIGN.md "Threads") and never waits for the disk. This
writer, one thread of its own, keeps its own copy of the project as the disk has it; each
change (an autosaved label, an accept, a setting, new images) is applied to that copy on the
writer's thread and written (atomically and fsynced: segdesk.core.storage). One writer, one order:
two threads never race on project.json, and a newer change is never overwritten by an older copy.

Each result comes back to the GUI thread as a queued signal carrying the image's entry as the
disk now has it, for the window to copy into its Project: an image shows "accepted" only once
its label file and project.json are on disk. ``flush`` waits, bounded, for everything submitted
(at closing); an image switch never waits.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject, Signal

from segdesk.core import encoding, storage
from segdesk.core.errors import SegdeskError
from segdesk.core.project import ImageEntry, Project

log = logging.getLogger(__name__)

CLOSE_S = 30.0  # the longest closing (or opening another project) waits for the disk


def _accept_over(accepting: dict, image_id: str, version: int) -> None:
    if accepting.get(image_id) == version:
        del accepting[image_id]


def entry_fields(entry: ImageEntry) -> dict:
    """What the window copies from the disk's entry of an image into its own Project."""
    return {"status": entry.status, "accepted_at": entry.accepted_at, "seconds_spent": entry.seconds_spent}


def mirror(project: Project, image_id: str, fields: dict) -> None:
    """Copy an entry reported by the writer into the window's ``project``."""
    entry = project.image(image_id)
    for key, value in fields.items():
        setattr(entry, key, value)


class ProjectWriter(QObject):
    # image id, document version, the image's entry fields on disk (``entry_fields``)
    label_written = Signal(str, int, object)
    label_failed = Signal(str, int, str)  # image id, version, message
    # image id, document version, entry fields, the stored label (unlabelled pixels made background)
    accepted = Signal(str, int, object, object)
    accept_failed = Signal(str, int, str)  # image id, version, message
    project_failed = Signal(str, str)  # a setting (its key) or new images ("") not written: the message
    # from the writer thread: the project's generation, the signal's name, its arguments; relayed
    # on the GUI thread only while that project is still the one written (a report of the project
    # open before is dropped: an image of the same id there is another image)
    _relay = Signal(int, str, object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._disk: Project | None = None  # the writer thread's copy: what project.json holds
        # the writer thread's: the label patches change (None for the array: the stored file is it, read
        # when a patch or an accept needs it; ``_kept_label``)
        self._kept: tuple[str, np.ndarray | None] | None = None
        # the writer thread's: an accept of the kept label stored, not yet adopted by the document
        # (image id, document version); ``adopt_accepted`` then keeps only the stored file
        self._stored_not_adopted: tuple[str, int] | None = None
        # the writer thread's: the kept label is that stored accept, merged in place (one without a
        # proposal: no second 0.4 GB array at 20,000 px); these bits (encoding.unlabelled_bits) give
        # back the label it was merged from, the document's until it adopts the stored one (image id, bits)
        self._unmerge: tuple[str, np.ndarray] | None = None
        self._done = threading.Condition()
        self._pending = 0
        self._saved_versions: dict[str, int] = {}  # written by the writer thread, read after flush()
        self._accepting: dict[str, int] = {}  # image id -> document version of an accept on its way
        self._closed = False
        self._generation = 0
        self._relay.connect(self._deliver)
        # one thread, so the writes keep their order; a plain Python thread, not a QThread: one
        # destroyed with its window while a write runs would abort the process
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segdesk-project-writer")

    # ----- the GUI thread's side

    def set_project(self, project: Project) -> None:
        """Write ``project`` from now on (after what was submitted for the previous one)."""
        self.flush()
        self._generation += 1
        self._saved_versions, self._accepting = {}, {}  # the previous project's jobs keep theirs
        copy = Project(project.root, project.to_json())
        self._submit(lambda: self._use(copy))

    def mark_saved(self, image_id: str, version: int) -> None:
        """``version`` of an image's label is what the disk holds (it was just loaded)."""
        self._saved_versions[image_id] = version

    def saved_version(self, image_id: str) -> int | None:
        return self._saved_versions.get(image_id)

    def accepting(self, image_id: str) -> int | None:
        """The document version whose accept is on its way, or None."""
        return self._accepting.get(image_id)

    def write_label(self, image_id: str, label: np.ndarray, version: int, keep: bool = False) -> None:
        """Queue a label file write (``label``: the caller's copy; it must not change afterwards).
        ``keep``: the writer keeps it, and ``write_label_patch`` changes it from now on."""
        versions = self._saved_versions
        self._submit(lambda: self._write_label(image_id, label, version, versions, keep))

    def keep_from_disk(self, image_id: str, shape: tuple[int, int]) -> None:
        """Keep the image's label as the disk has it (none stored: all unlabelled), for
        ``write_label_patch``; read on the writer's thread, after every write queued before."""
        self._submit(lambda: self._keep_from_disk(image_id, shape))

    def write_label_patch(self, image_id: str, box: tuple[int, int, int, int], values: np.ndarray,
                          version: int) -> None:
        """Queue a write of the label kept by the last ``write_label(..., keep=True)`` of this image
        with ``box`` (y0, x0, y1, x1) set to ``values`` (the caller's copy): what changed since, so a
        large label is not copied whole on the GUI thread at every stroke."""
        versions = self._saved_versions
        self._submit(lambda: self._write_patch(image_id, box, values, version, versions))

    def accept(self, image_id: str, label: np.ndarray, version: int, seconds: float,
               checkpoint: str | None) -> None:
        """Queue an accept (Project.accept: the label file, then project.json, then the log line)."""
        self._accepting[image_id] = version
        versions, accepting = self._saved_versions, self._accepting
        self._submit(lambda: self._accept(image_id, label, version, seconds, checkpoint, versions, accepting))

    def keep_label(self, image_id: str, label: np.ndarray) -> None:
        """Keep ``label`` (the caller's copy; it must not change afterwards) as the image's label
        for ``write_label_patch`` and ``accept_kept``, without writing it."""
        self._submit(lambda: self._keep(image_id, label))

    def accept_kept(self, image_id: str, box: tuple[int, int, int, int] | None, values: np.ndarray | None,
                    version: int, seconds: float, checkpoint: str | None, proposal: np.ndarray | None) -> None:
        """Queue an accept of the kept label (``keep_from_disk``, ``keep_label`` or a kept
        ``write_label``) with ``box`` set to ``values`` first (what changed since; None: nothing),
        merged here with ``proposal`` (encoding.merge_accept), so a large label is neither merged
        nor copied whole on the GUI thread. ``proposal`` is given away: the merge is written into it
        (without one, into the kept copy) and it comes back with ``accepted`` as the stored label;
        until ``adopt_accepted`` says the document shows it, a patch applies to the label it was
        merged from."""
        self._accepting[image_id] = version
        versions, accepting = self._saved_versions, self._accepting
        self._submit(lambda: self._accept_kept(image_id, box, values, version, seconds, checkpoint, proposal,
                                               versions, accepting))

    def adopt_accepted(self, image_id: str, version: int) -> None:
        """The document of ``accept_kept``'s ``version`` took the stored label (and was not edited
        in between): later patches apply to the stored file, read again when the first one comes."""
        self._submit(lambda: self._adopt_accepted(image_id, version))

    def set_setting(self, key: str, value) -> None:
        self._submit(lambda: self._set_setting(key, value))

    def add_images(self, entries: list[ImageEntry]) -> None:
        """Images the window's Project has added (Project.add_images with ``save=False``)."""
        copies = [asdict(e) for e in entries]
        self._submit(lambda: self._add_images(copies))

    def pending(self) -> int:
        return self._pending

    def flush(self, timeout: float = CLOSE_S) -> bool:
        """Wait until every submitted write has finished (its report is queued, not yet delivered);
        False, with a warning logged, when some still run after ``timeout`` seconds."""
        with self._done:
            if self._done.wait_for(lambda: self._pending == 0, timeout):
                return True
            log.warning("%d project write(s) still running after %.2f s", self._pending, timeout)
            return False

    def shutdown(self, timeout: float = CLOSE_S) -> bool:
        """Wait (bounded) for what was submitted, then stop the thread; False if writes still ran."""
        flushed = self.flush(timeout)
        self._closed = True
        self._pool.shutdown(wait=False)  # a write still running ends on its own
        return flushed

    def _submit(self, job: Callable[[], None]) -> None:
        if self._closed:
            log.warning("a write was asked for after the writer stopped; it is not made")
            return
        with self._done:
            self._pending += 1
        self._pool.submit(self._run, job, self._generation)

    # ----- the writer thread

    def _run(self, job: Callable[[], None], generation: int) -> None:
        self._job_generation = generation  # the reports of this job carry it (the writer thread's own)
        try:
            job()
        except Exception:  # noqa: BLE001 - a bug in a job must not stop every later write
            log.exception("a project write failed unexpectedly")
        finally:
            with self._done:
                self._pending -= 1
                self._done.notify_all()

    def _report(self, name: str, *args) -> None:
        """Emit signal ``name`` on the GUI thread, unless another project is written by then."""
        try:
            self._relay.emit(self._job_generation, name, args)
        except RuntimeError:  # the window (and this object) went away while the write ran
            log.debug("a project write finished after the window closed")

    def _deliver(self, generation: int, name: str, args: tuple) -> None:
        if generation == self._generation:
            getattr(self, name).emit(*args)

    def _use(self, copy: Project) -> None:
        self._disk = copy
        self._set_kept(None)  # the previous project's label is never patched
        self._stored_not_adopted = None

    def _keep_from_disk(self, image_id: str, shape: tuple[int, int]) -> None:
        try:
            label = self._disk.read_label(image_id)
        except SegdeskError as exc:  # the next patch fails and the save keeper sends the whole label
            log.warning("could not read the label of %s to keep: %s", image_id, exc)
            self._set_kept(None)
            return
        self._set_kept((image_id, np.zeros(shape, np.uint8) if label is None else label))

    def _keep(self, image_id: str, label: np.ndarray) -> None:
        self._set_kept((image_id, label))

    def _set_kept(self, kept: tuple[str, np.ndarray | None] | None) -> None:
        self._kept, self._unmerge = kept, None

    def _kept_label(self, image_id: str) -> np.ndarray | None:
        """The label kept for ``image_id``, read from its file where only the file was kept; None when
        none is kept or the file cannot be read (logged)."""
        kept = self._kept
        if kept is None or kept[0] != image_id:
            return None
        if kept[1] is None:
            try:
                label = self._disk.read_label(image_id)
            except SegdeskError as exc:
                log.warning("could not read the stored label of %s: %s", image_id, exc)
                label = None
            self._set_kept(None if label is None else (image_id, label))
            return label
        if self._unmerge is not None:  # the stored accept, not adopted: the document's base is the label
            label = kept[1].copy()  # before the merge (the stored array went to the GUI: not changed here)
            encoding.restore_unlabelled(label, self._unmerge[1])
            self._set_kept((image_id, label))
            return label
        return kept[1]

    def _write_patch(self, image_id: str, box, values: np.ndarray, version: int, versions: dict) -> None:
        label = self._kept_label(image_id)
        if label is None:  # the caller sends a whole label first (SaveKeeper)
            log.error("a label patch for %s came without its label; not written", image_id)
            self._report("label_failed", image_id, version, "Could not save the label (no base to patch).")
            return
        y0, x0, y1, x1 = box
        label[y0:y1, x0:x1] = values  # kept up to date even when this write fails: the next one has it all
        self._write_label(image_id, label, version, versions)

    def _write_label(self, image_id: str, label: np.ndarray, version: int, versions: dict,
                     keep: bool = False) -> None:
        if keep:
            self._set_kept((image_id, label))
        disk = self._disk
        try:
            entry = disk.image(image_id)
            storage.write_label(disk.label_path(image_id), label)
            before = entry.status
            try:
                disk.label_saved(image_id, bool(label.any()), encoding.has_unlabelled(label))
            except SegdeskError:
                entry.status = before  # project.json not written: the copy stays what the disk holds
                raise
        except SegdeskError as exc:
            log.warning("saving the label of %s failed: %s", image_id, exc)
            self._report("label_failed", image_id, version, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - never lose the error in the thread (DESIGN.md style 4)
            log.exception("saving the label of %s failed", image_id)
            self._report("label_failed", image_id, version, f"Could not save the label: {exc}")
            return
        versions[image_id] = version
        self._report("label_written", image_id, version, entry_fields(entry))

    def _accept(self, image_id: str, label: np.ndarray, version: int, seconds: float,
                checkpoint: str | None, versions: dict, accepting: dict, owned: bool = False) -> bool:
        """``owned``: ``label`` is this thread's own array, merged in place (Project.accept ``in_place``)."""
        disk = self._disk
        try:
            stored = disk.accept(image_id, label, seconds, proposal_checkpoint=checkpoint, in_place=owned)
        except SegdeskError as exc:  # Project.accept left the copy as the disk has it
            log.warning("accepting %s failed: %s", image_id, exc)
            _accept_over(accepting, image_id, version)
            self._report("accept_failed", image_id, version, str(exc))
            return False
        except Exception as exc:  # noqa: BLE001
            log.exception("accepting %s failed", image_id)
            _accept_over(accepting, image_id, version)
            self._report("accept_failed", image_id, version, f"Could not store the accept: {exc}")
            return False
        versions[image_id] = version  # nothing of this version is left to write
        _accept_over(accepting, image_id, version)
        self._report("accepted", image_id, version, entry_fields(disk.image(image_id)), stored)
        return True

    def _accept_kept(self, image_id: str, box, values: np.ndarray | None, version: int, seconds: float,
                     checkpoint: str | None, proposal: np.ndarray | None, versions: dict, accepting: dict) -> None:
        kept = self._kept_label(image_id)
        if kept is None:  # its reading failed: the save keeper sends it whole
            log.error("an accept of %s came without its label; not stored", image_id)
            _accept_over(accepting, image_id, version)
            self._report("accept_failed", image_id, version,
                         "Could not accept: the label to store was not at hand (it is saved again now).")
            return
        if box is not None:
            y0, x0, y1, x1 = box
            kept[y0:y1, x0:x1] = values
        self._stored_not_adopted = None
        onto = (proposal is not None and proposal.dtype == np.uint8 and proposal.flags.c_contiguous
                and proposal.flags.writeable)
        bits = None
        try:
            # no second whole label (0.4 GB at 20,000 px): merged into the proposal, given away by the
            # caller (the kept label stays the document's); else the kept label is merged in place,
            # undone by the bits where needed
            if onto:
                encoding.merge_accept_onto(proposal, kept)
                label = proposal
            else:
                bits = encoding.unlabelled_bits(kept)
                encoding.merge_accept_into(kept, proposal)
                label = kept
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: not accepted, the label kept
            log.exception("merging the accept of %s failed", image_id)
            self._unmerged(image_id, kept, bits)
            _accept_over(accepting, image_id, version)
            self._report("accept_failed", image_id, version, f"Could not store the accept: {exc}")
            return
        if self._accept(image_id, label, version, seconds, checkpoint, versions, accepting, owned=True):
            # stored: the document adopts it (then only the file is kept, adopt_accepted); a patch or
            # accept before that applies to the label it was merged from (_kept_label)
            if bits is not None:
                self._unmerge = (image_id, bits)
            self._stored_not_adopted = (image_id, version)
        else:
            self._unmerged(image_id, kept, bits)

    def _unmerged(self, image_id: str, kept: np.ndarray, bits: np.ndarray | None) -> None:
        """An accept merged in place was not stored: ``kept`` is made the label it was merged from
        (``bits`` None: the merge had not begun)."""
        if bits is None:
            return
        try:
            encoding.restore_unlabelled(kept, bits)
        except Exception:  # noqa: BLE001 - the next patch fails and the save keeper sends the label whole
            log.exception("could not restore the kept label of %s", image_id)
            self._set_kept(None)

    def _adopt_accepted(self, image_id: str, version: int) -> None:
        pending, self._stored_not_adopted = self._stored_not_adopted, None
        kept = self._kept
        if kept is None or kept[0] != image_id:
            return  # another label is kept now: nothing to bring up to date
        if pending != (image_id, version):
            # never expected (the GUI adopts only the version this writer stored); the kept copy is
            # not what the document holds, so drop it: the next patch fails, the retry sends it whole
            log.error("the accept of %s (version %d) to adopt is not the one stored", image_id, version)
            self._set_kept(None)
            return
        # the document now holds what was stored (the very array): keep only the file
        self._set_kept((image_id, None))

    def _set_setting(self, key: str, value) -> None:
        disk = self._disk
        had, before = key in disk.settings, disk.settings.get(key)
        disk.settings[key] = value
        try:
            disk.save()
        except SegdeskError as exc:
            if had:
                disk.settings[key] = before
            else:
                del disk.settings[key]
            log.warning("setting %s not saved: %s", key, exc)
            self._report("project_failed", key, f"Setting not saved: {exc}")

    def _add_images(self, entries: list[dict]) -> None:
        data = self._disk.to_json()
        data["images"] += entries
        copy = Project(self._disk.root, data)
        self._disk = copy  # kept even when not written: the next write of project.json stores them
        try:
            copy.save()
        except SegdeskError as exc:
            log.warning("new images not saved: %s", exc)
            self._report("project_failed", "", f"The new images are not saved yet: {exc}")
            return
        copy.log_event("images_added", count=len(entries))
