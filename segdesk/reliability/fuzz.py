"""Fuzz the readers: images (PNG, JPEG, TIFF, BMP, DICOM when present), label PNGs and project.json.

    python -m segdesk.reliability.fuzz --inputs 10000 --out fuzz.json

Valid seed files are mutated by hypothesis strategies (segdesk.reliability.mutate): bit flips,
interesting integers, truncation, header fields (huge dimensions, bad depths, bad offsets) and, for
project.json, structural edits and deep nesting. Every input must either load (and then be usable:
displayable and normalisable images, a project whose fields have the types the app relies on) or
raise the typed error the GUI shows (ImageReadError, LabelError, ProjectError). Anything else, an
input that takes longer than ``--time-limit`` seconds, or one whose peak memory (Python and numpy
allocations via tracemalloc, and the process's resident set via /proc) passes ``--memory-limit-mb``
counts as a failure; failing inputs are saved for reproduction. Exit status 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segdesk.core import display, imageio, storage
from segdesk.core.image import MAX_FILE_BYTES, MAX_PIXELS, Image
from segdesk.core.errors import ImageReadError, LabelError, ProjectError
from segdesk.core.project import PROJECT_FILE, STATUSES, Project
from segdesk.ml.normalise import normalise_hwc
from segdesk.reliability.seeds import image_seeds, label_seed

log = logging.getLogger(__name__)

TIME_LIMIT_S = 10.0
MEMORY_LIMIT_MB = 256
HANG_ABORT_S = 120.0
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")

LOADED, REFUSED, CRASH, SLOW, MEMORY, UNUSABLE = "loaded", "refused", "crash", "slow", "memory", "unusable"
FAILURES = (CRASH, SLOW, MEMORY, UNUSABLE)


@dataclass
class Outcome:
    target: str
    result: str
    seconds: float
    peak_mb: float
    detail: str = ""


@dataclass
class Tally:
    counts: Counter = field(default_factory=Counter)
    by_seed: Counter = field(default_factory=Counter)
    failures: list[dict] = field(default_factory=list)
    max_seconds: float = 0.0
    max_peak_mb: float = 0.0
    n: int = 0
    heaviest: list = field(default_factory=list)  # (peak MB, seconds, case) of the costliest inputs

    def add(self, case, outcome: Outcome, save_dir: Path | None) -> None:
        self.n += 1
        self.counts[f"{outcome.target}:{outcome.result}"] += 1
        self.by_seed[f"{case.seed}:{outcome.result}"] += 1
        self.max_seconds = max(self.max_seconds, outcome.seconds)
        self.max_peak_mb = max(self.max_peak_mb, outcome.peak_mb)
        self.heaviest.append((round(outcome.peak_mb, 1), round(outcome.seconds, 3), outcome.result,
                              case.describe()[:300]))
        if len(self.heaviest) > 40:
            self.heaviest = sorted(self.heaviest, reverse=True)[:10]
        if outcome.result in FAILURES:
            record = {"target": outcome.target, "result": outcome.result, "case": case.describe(),
                      "detail": outcome.detail[:2000], "seconds": round(outcome.seconds, 3),
                      "peak_mb": round(outcome.peak_mb, 1)}
            if save_dir is not None and len(self.failures) < 500:
                save_dir.mkdir(parents=True, exist_ok=True)
                name = f"{len(self.failures):04d}-{case.seed}{case.suffix or '.bin'}"
                (save_dir / name).write_bytes(case.data)
                record["file"] = str(save_dir / name)
            self.failures.append(record)


# ----- memory and time measurement


class Meter:
    """Peak memory of one input: tracemalloc (Python + numpy) and the resident-set high-water mark."""

    def __init__(self):
        self.rss_ok = _CLEAR_REFS.exists() and os.access(_CLEAR_REFS, os.W_OK)
        if not tracemalloc.is_tracing():
            tracemalloc.start()

    @staticmethod
    def _hwm_kb() -> int:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    @staticmethod
    def rss_mb() -> float:
        try:
            for line in _STATUS.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def start(self) -> None:
        tracemalloc.reset_peak()
        self._traced0 = tracemalloc.get_traced_memory()[0]
        self._rss0 = 0
        if self.rss_ok:
            try:
                _CLEAR_REFS.write_text("5")  # reset VmHWM to the current RSS
                self._rss0 = self._hwm_kb()
            except OSError:
                self.rss_ok = False

    def peaks_mb(self) -> tuple[float, float]:
        """(allocated, resident): bytes asked for through Python/numpy (touched or not), and growth
        of the resident set (C decoders included)."""
        traced = (tracemalloc.get_traced_memory()[1] - self._traced0) / 2**20
        rss = (self._hwm_kb() - self._rss0) / 1024 if self.rss_ok else 0.0
        return traced, rss

    def peak_mb(self) -> float:
        return max(self.peaks_mb())


class Watchdog(threading.Thread):
    """Ends the process with a report if one input runs for more than ``abort_s`` seconds: a hang
    inside a C decoder cannot be interrupted from Python."""

    def __init__(self, abort_s: float, on_hang):
        super().__init__(daemon=True, name="fuzz-watchdog")
        self.abort_s, self.on_hang = abort_s, on_hang
        self.case, self.since = None, None
        self._lock = threading.Lock()

    def begin(self, case) -> None:
        with self._lock:
            self.case, self.since = case, time.monotonic()

    def end(self) -> None:
        with self._lock:
            self.case, self.since = None, None

    def run(self) -> None:
        while True:
            time.sleep(1.0)
            with self._lock:
                case, since = self.case, self.since
            if case is not None and time.monotonic() - since > self.abort_s:
                self.on_hang(case)
                os._exit(3)


# ----- the checks (also used by tests/test_reliability_fuzz.py)


def _usable_image(img: Image) -> None:
    """What the app does with a loaded image: display it and normalise it for the model."""
    px = img.pixels
    assert px.ndim == 2 or (px.ndim == 3 and px.shape[2] == 3), px.shape
    assert px.shape[0] > 0 and px.shape[1] > 0 and px.flags.c_contiguous
    window = display.auto_window(px) if img.bit_depth > 8 or px.dtype != np.uint8 else None
    shown = display.to_display(px, window)
    assert shown.shape == px.shape[:2] + (3,) and shown.dtype == np.uint8
    normalised = normalise_hwc(px)
    assert normalised.shape == px.shape[:2] + (3,)


def _judge(target, result, detail, seconds, meter, case, time_limit, memory_limit_mb) -> Outcome:
    traced, rss = meter.peaks_mb()
    peak = max(traced, rss)
    if result in (LOADED, REFUSED):
        if seconds > time_limit:
            result, detail = SLOW, f"took {seconds:.1f} s ({result}: {detail})"
        elif peak > memory_limit_mb:
            result, detail = MEMORY, (f"peak {traced:.0f} MB allocated, {rss:.0f} MB resident for a "
                                      f"{len(case.data)} byte file ({result}: {detail})")
    return Outcome(target, result, seconds, peak, detail)


def check_image(case, folder: Path, meter: Meter, time_limit: float = TIME_LIMIT_S,
                memory_limit_mb: float = MEMORY_LIMIT_MB) -> Outcome:
    path = folder / f"input{case.suffix}"
    path.write_bytes(case.data)
    result, detail = LOADED, ""
    meter.start()
    t0 = time.perf_counter()
    try:
        img = imageio.read_image(path)
        try:
            _usable_image(img)
        except Exception as exc:  # noqa: BLE001 - what we are looking for
            result, detail = UNUSABLE, f"{type(exc).__name__}: {exc}"
        del img
        imageio.read_image_size(path)
    except ImageReadError as exc:
        if result == LOADED:
            result, detail = REFUSED, str(exc)
    except Exception as exc:  # noqa: BLE001 - what we are looking for
        result, detail = CRASH, f"{type(exc).__name__}: {exc}"
    return _judge("image", result, detail, time.perf_counter() - t0, meter, case, time_limit,
                  memory_limit_mb)


def check_label(case, folder: Path, meter: Meter, shape: tuple[int, int], n_classes: int,
                time_limit: float = TIME_LIMIT_S, memory_limit_mb: float = MEMORY_LIMIT_MB) -> Outcome:
    path = folder / "label.png"
    path.write_bytes(case.data)
    result, detail = LOADED, ""
    meter.start()
    t0 = time.perf_counter()
    try:
        label = storage.read_label(path, shape, n_classes)
        if label.shape != tuple(shape) or label.dtype != np.uint8 or int(label.max()) > n_classes + 1:
            result, detail = UNUSABLE, f"label {label.dtype} {label.shape} max {label.max()}"
    except LabelError as exc:
        result, detail = REFUSED, str(exc)
    except Exception as exc:  # noqa: BLE001
        result, detail = CRASH, f"{type(exc).__name__}: {exc}"
    return _judge("label", result, detail, time.perf_counter() - t0, meter, case, time_limit,
                  memory_limit_mb)


def usable_project(project: Project) -> None:
    """The fields the app relies on after Project.open, with the types it relies on."""
    json.dumps(project.to_json())
    assert isinstance(project.name, str)
    labels = (project.root / "labels").resolve()
    ids = set()
    for c in project.classes:
        assert isinstance(c.name, str) and c.name.strip(), c.name
        assert len(c.rgb) == 3
    for e in project.images:
        assert isinstance(e.id, str) and e.id not in ids, e.id
        ids.add(e.id)
        assert project.label_path(e.id).resolve().parent == labels, e.id
        assert project.proposal_path(e.id).resolve().parent == (project.root / "proposals").resolve()
        assert isinstance(e.source, str) and isinstance(e.sha256, str)
        project.source_path(e)
        h, w = e.shape
        assert type(h) is int and type(w) is int and h > 0 and w > 0, e.shape
        assert e.status in STATUSES
        assert e.accepted_at is None or isinstance(e.accepted_at, (int, float))
        assert isinstance(e.seconds_spent, (int, float)) and e.seconds_spent >= 0
        assert h * w <= MAX_PIXELS  # entry.shape is used to allocate label arrays
    auto = project.settings.get("auto_train_after", 2)
    assert int(auto) >= 1
    project.accepted_ids()
    for e in project.images[:1]:
        project.image(e.id)


def check_project(case, folder: Path, meter: Meter, time_limit: float = TIME_LIMIT_S,
                  memory_limit_mb: float = MEMORY_LIMIT_MB) -> Outcome:
    (folder / PROJECT_FILE).write_bytes(case.data)
    result, detail = LOADED, ""
    meter.start()
    t0 = time.perf_counter()
    try:
        project = Project.open(folder, clean=False)
        try:
            usable_project(project)
        except Exception as exc:  # noqa: BLE001
            result, detail = UNUSABLE, f"{type(exc).__name__}: {exc}"
    except ProjectError as exc:
        result, detail = REFUSED, str(exc)
    except Exception as exc:  # noqa: BLE001
        result, detail = CRASH, f"{type(exc).__name__}: {exc}"
    return _judge("project", result, detail, time.perf_counter() - t0, meter, case, time_limit,
                  memory_limit_mb)


def project_seed(folder: Path) -> str:
    """A valid project.json with images of every status, settings and two classes."""
    images = folder / "seed-images"
    images.mkdir(parents=True, exist_ok=True)
    for s in image_seeds(include_dicom=False)[:4]:
        (images / f"{s.name}{s.suffix}").write_bytes(s.data)
    project = Project.create(folder / "seed-project", ["lesion", "organ"])
    project.add_images([images])
    ids = [e.id for e in project.images]
    label = np.ones(project.images[0].shape, np.uint8)
    project.accept(ids[0], label, seconds_spent=12.5, proposal_checkpoint="0001")
    project.save_label(ids[1], np.where(np.arange(label.size).reshape(project.images[1].shape) % 7 == 0, 2, 0)
                       .astype(np.uint8))
    project.settings.update({"auto_train_after": 3, "working_scale": 0.5})
    project.save()
    return (project.root / PROJECT_FILE).read_text()


# ----- the run


def run(n_inputs: int, out: Path | None = None, save_dir: Path | None = None, seed: int = 0,
        time_limit: float = TIME_LIMIT_S, memory_limit_mb: float = MEMORY_LIMIT_MB,
        targets: tuple[str, ...] = ("image", "label", "project")) -> dict:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    from segdesk.reliability.mutate import mutated_images, mutated_projects

    logging.getLogger("segdesk").setLevel(logging.CRITICAL)  # refused inputs log; keep the run quiet
    seeds = image_seeds()
    dicom = any(s.kind == "dicom" for s in seeds)
    label_bytes, label_shape, label_classes = label_seed()
    from segdesk.reliability.seeds import Seed

    label_seeds = [Seed("label", "png", ".png", label_bytes)]
    share = {"image": 0.7, "label": 0.1, "project": 0.2}
    total_share = sum(share[t] for t in targets)
    budget = {t: max(1, round(n_inputs * share[t] / total_share)) for t in targets}
    tally = Tally()
    meter = Meter()
    rss_start = Meter.rss_mb()
    started = time.monotonic()

    def on_hang(case):
        report = {"aborted": f"hang: one input ran over {HANG_ABORT_S:.0f} s", "case": case.describe()}
        if save_dir is not None:
            save_dir.mkdir(parents=True, exist_ok=True)
            (save_dir / f"hang-{case.seed}{case.suffix or '.bin'}").write_bytes(case.data)
        if out is not None:
            out.write_text(json.dumps(report, indent=2))
        print(json.dumps(report), file=sys.stderr)

    watchdog = Watchdog(HANG_ABORT_S, on_hang)
    watchdog.start()
    with tempfile.TemporaryDirectory(prefix="segdesk-fuzz-") as tmp:
        folder = Path(tmp)
        project_text = project_seed(folder / "seed") if "project" in targets else ""
        work = folder / "work"
        work.mkdir()

        def runner(strategy, check, n, **kw):
            @hypothesis_seed(seed)
            @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(strategy)
            def body(case):
                watchdog.begin(case)
                outcome = check(case, work, meter, time_limit=time_limit, memory_limit_mb=memory_limit_mb, **kw)
                watchdog.end()
                tally.add(case, outcome, save_dir)
            body()

        if "image" in targets:
            runner(mutated_images(seeds), check_image, budget["image"])
        if "label" in targets:
            runner(mutated_images(label_seeds), check_label, budget["label"],
                   shape=label_shape, n_classes=label_classes)
        if "project" in targets:
            runner(mutated_projects(project_text), check_project, budget["project"])

    failures = sum(v for k, v in tally.counts.items() if k.split(":")[1] in FAILURES)
    report = {
        "inputs": tally.n,
        "failures": failures,
        "seconds": round(time.monotonic() - started, 1),
        "formats": sorted({s.kind for s in seeds}),
        "dicom_included": dicom,
        "counts": dict(sorted(tally.counts.items())),
        "by_seed": dict(sorted(tally.by_seed.items())),
        "max_seconds_per_input": round(tally.max_seconds, 3),
        "max_peak_mb_per_input": round(tally.max_peak_mb, 1),
        "rss_mb": {"start": round(rss_start, 1), "end": round(Meter.rss_mb(), 1),
                   "max": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)},
        "limits": {"time_s": time_limit, "memory_mb": memory_limit_mb, "max_pixels": MAX_PIXELS,
                   "max_file_bytes": MAX_FILE_BYTES},
        "rss_measured": meter.rss_ok,
        "heaviest_inputs": sorted(tally.heaviest, reverse=True)[:10],
        "failure_examples": tally.failures[:100],
    }
    if out is not None:
        out.write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segdesk.reliability.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=10_000, help="total inputs (70%% images, 10%% labels, "
                        "20%% project.json)")
    parser.add_argument("--out", type=Path, default=Path("fuzz.json"), help="JSON report")
    parser.add_argument("--save-failures", type=Path, metavar="DIR", help="keep failing inputs here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT_S, help="seconds per input")
    parser.add_argument("--memory-limit-mb", type=float, default=MEMORY_LIMIT_MB, help="peak per input")
    parser.add_argument("--targets", default="image,label,project")
    args = parser.parse_args(argv)
    report = run(args.inputs, args.out, args.save_failures, args.seed, args.time_limit, args.memory_limit_mb,
                 tuple(t for t in args.targets.split(",") if t))
    summary = {k: report[k] for k in ("inputs", "failures", "seconds", "max_seconds_per_input",
                                      "max_peak_mb_per_input", "rss_mb")}
    print(json.dumps(summary))
    for f in report["failure_examples"][:10]:
        print(f"{f['result']}: {f['case']}: {f['detail'][:200]}", file=sys.stderr)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
