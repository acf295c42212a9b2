"""``segdesk bench large``: images of any size in the real window, with peak memory and stalls.

For each requested image (default: a 10,000 x 10,000 RGB PNG and a 20,000 x 20,000 16-bit gray
TIFF, generated here with cheap smooth content and nucleus-like blobs, never committed) the bench
makes a one-image project with the bundled nuclei model as its current checkpoint, opens it in the
real main window (offscreen unless a display is set) and acts as a user: opens the image, zooms out
and in, pans at actual pixels, paints brush strokes with the mouse, waits for the proposal
(asked for as the image opened, as the app does) and accepts it. Training is kept from starting
(the project's auto-start is set out of reach): the figures are those of viewing, editing and
segmenting.

Per phase it records the longest gap of a 5 ms timer on the GUI event loop (a stall the user
feels), with the GUI thread's own CPU time in it (a stall it did not spend is other programs' load
or other threads'), and the peak resident memory of the process (VmHWM, reset at each phase start through
/proc/self/clear_refs where Linux allows it, else sampled on every tick). The images are written
by a child process, so their generation does not count.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TICK_MS = 5
DEFAULT_IMAGES = ("rgb:10000", "gray:20000")
KINDS = ("rgb", "gray")
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
STALL_GOAL_MS = 30.0
RSS_GOAL_BYTES = 3 * 1024**3


@dataclass(frozen=True)
class Spec:
    kind: str  # rgb (8-bit PNG) or gray (16-bit TIFF)
    size: int  # square side in pixels

    @property
    def name(self) -> str:
        return f"{self.kind}{self.size}.{'png' if self.kind == 'rgb' else 'tif'}"


def parse_specs(text: str) -> list[Spec]:
    """'rgb:10000,gray:20000' -> specs; ValueError with a hint otherwise."""
    specs = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        kind, _, size = item.partition(":")
        if kind not in KINDS or not size.isdigit() or int(size) < 64:
            raise ValueError(f"{item!r}: give KIND:SIDE with KIND rgb or gray and SIDE >= 64, e.g. rgb:10000")
        specs.append(Spec(kind, int(size)))
    if not specs:
        raise ValueError("give at least one image, e.g. rgb:10000,gray:20000")
    return specs


# ----- images (written by a child process)


def _content(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(smooth background in 0..1, float32; blob mask, uint8) of size x size, cheap to make."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.random((max(4, size // 512), max(4, size // 512)), dtype=np.float32)
    background = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    blobs = np.zeros((size, size), np.uint8)
    n = max(20, size * size // 40_000)  # one nucleus per 200 x 200 px
    for x, y, r in zip(rng.integers(0, size, n), rng.integers(0, size, n), rng.integers(6, 18, n)):
        cv2.circle(blobs, (int(x), int(y)), int(r), 1, -1)
    return background, blobs


def write_image(spec: Spec, folder: str) -> str:
    import cv2
    import tifffile

    path = Path(folder) / spec.name
    background, blobs = _content(spec.size, seed=spec.size)
    if spec.kind == "rgb":  # H&E-like: pink background, purple nuclei
        shade = (background * 40).astype(np.uint8)
        del background
        bgr = np.empty((spec.size, spec.size, 3), np.uint8)
        for c, (base, nucleus) in enumerate(((200, 110), (170, 40), (225, 120))):  # B, G, R
            channel = bgr[:, :, c]
            np.subtract(np.uint8(base), shade, out=channel)
            channel[blobs > 0] = nucleus
        cv2.imwrite(str(path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:  # fluorescence-like 16-bit: dim uneven background, bright nuclei
        gray = (background * 800 + 400).astype(np.uint16)
        del background
        gray[blobs > 0] = 4000
        tifffile.imwrite(path, gray)
    return str(path)


def generate(specs: list[Spec], folder: Path) -> list[Path]:
    """Write the images in a child process, so their making is not in this process's peak memory."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return [Path(pool.apply(write_image, (spec, str(folder)))) for spec in specs]


# ----- memory


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def _hwm_bytes() -> int:
    """Peak resident memory (VmHWM) since start or the last reset; ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _release_freed_memory() -> None:
    """Hand memory the process has freed back to the system (glibc keeps freed heap memory in its
    arenas, where it still counts as resident)."""
    import gc

    from segdesk.core.memory import release_freed_memory

    gc.collect()
    release_freed_memory()


def _gb(n: float) -> float:
    return round(n / 1024**3, 3)


# ----- the run


class _Meter:
    """Event-loop gaps and memory, per named phase."""

    def __init__(self):
        self.phase = "start"
        self.last = time.perf_counter()
        self.last_cpu = time.thread_time()  # the GUI thread's own CPU: a gap it did not use is the machine's
        self.phases: dict[str, dict] = {}
        self.can_reset = _reset_hwm()

    def begin(self, phase: str) -> None:
        self.phase = phase
        self.phases[phase] = {"gaps": [], "cpu": [], "rss_max": _rss_bytes(), "t0": time.perf_counter()}
        # the bench's own set-up before the phase (making the project) is not the window's stall
        self.last, self.last_cpu = time.perf_counter(), time.thread_time()
        if self.can_reset:
            _reset_hwm()

    def tick(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        p = self.phases.get(self.phase)
        if p is not None:
            p["gaps"].append((now - self.last) * 1000)
            p["cpu"].append((cpu - self.last_cpu) * 1000)
            p["rss_max"] = max(p["rss_max"], _rss_bytes())
        self.last, self.last_cpu = now, cpu

    def end(self) -> dict:
        p = self.phases[self.phase]
        gaps, cpu = p.pop("gaps"), p.pop("cpu")
        longest = int(np.argmax(gaps)) if gaps else None
        peak = max(_hwm_bytes(), p.pop("rss_max")) if self.can_reset else p.pop("rss_max")
        p.update({
            "seconds": round(time.perf_counter() - p.pop("t0"), 2),
            "longest_stall_ms": round(max(gaps, default=0.0), 1),
            "p99_ms": round(float(np.percentile(gaps, 99)), 1) if gaps else None,
            "stalls_over_30ms": int(sum(g > STALL_GOAL_MS for g in gaps)),
            # the GUI thread's own CPU time in its longest stall, and the most it used in any one gap
            "gui_cpu_in_longest_stall_ms": round(cpu[longest], 1) if longest is not None else None,
            "gui_cpu_max_in_a_gap_ms": round(max(cpu, default=0.0), 1),
            "peak_rss_gb": _gb(peak),
        })
        self.phase = "between"
        return p


class _StallTracer:
    """Samples the GUI thread's stack while the event loop is late (no tick for 30 ms), to place
    each stall in the code: {phase: {"file:line function < caller ...": samples}}."""

    def __init__(self, meter: _Meter, depth: int = 6):
        import threading

        self._meter, self._depth = meter, depth
        self._main = threading.main_thread().ident
        self.samples: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-tracer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            if time.perf_counter() - self._meter.last < STALL_GOAL_MS / 1000:
                continue
            frame = sys._current_frames().get(self._main)
            where = []
            while frame is not None and len(where) < self._depth:
                code = frame.f_code
                if "segdesk" in code.co_filename or not where:
                    where.append(f"{Path(code.co_filename).name}:{frame.f_lineno} {code.co_name}")
                frame = frame.f_back
            key = " < ".join(where)
            phase = self.samples.setdefault(self._meter.phase, {})
            phase[key] = phase.get(key, 0) + 1

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(1)
        return {phase: dict(sorted(keys.items(), key=lambda kv: -kv[1])[:8]) for phase, keys in self.samples.items()}


def make_project(image: str, root: str) -> str:
    """A one-image project with the bundled nuclei model as its current checkpoint (and its ONNX
    export), that does not train; run in a child process (``_project``)."""
    from segdesk.core.project import Project
    from segdesk.demo import _install_model, demo_model_dir
    from segdesk.qt.loop_controller import AUTO_START_KEY

    project = Project.create(Path(root), ["nucleus"])
    project.add_images([Path(image)])
    project.settings[AUTO_START_KEY] = 1_000_000  # no training: the figures are viewing and segmenting
    project.save()
    _install_model(demo_model_dir(), Path(root) / "models")
    return root


def _project(image: Path, root: Path):
    """``make_project`` in a child process: the window's own process never exports a model (its
    trainer does that in another process), so the exporter's memory is not the window's."""
    import multiprocessing as mp

    from segdesk.core.project import Project

    with mp.get_context("spawn").Pool(1) as pool:
        pool.apply(make_project, (str(image), str(root)))
    return Project.open(root)


def _one_image(app, window, image: Path, root: Path, meter: _Meter, wait_s: float, strokes: int,
               segment: bool = True) -> dict:
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtTest import QTest

    def pump(seconds: float, until=None) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            if until is not None and until():
                return True
            time.sleep(0.001)
        return until is None or bool(until())

    out: dict = {"image": image.name, "file_mb": round(image.stat().st_size / 1024**2, 1)}
    project = _project(image, root)
    image_id = project.images[0].id
    h, w = project.images[0].shape
    out["size"] = [w, h]
    proposals: list[tuple[float, str]] = []
    failures: list[str] = []
    shown = []

    canvas = window.canvas
    meter.begin("open")
    t0 = time.perf_counter()
    window.session.image_shown.connect(lambda i: shown.append(time.perf_counter()))
    window.session.image_failed.connect(lambda i: failures.append(f"open failed: {i}"))
    window.open_project(project.root)
    window.loop.proposal_ready.connect(lambda i, *_: proposals.append((time.perf_counter(), i)))
    window.loop.proposal_failed.connect(lambda i, m: failures.append(f"proposal: {m}"))
    opened = pump(wait_s, lambda: bool(shown) or bool(failures))
    pump(0.3)  # its first paints
    out["open_s"] = round(shown[0] - t0, 2) if shown else None
    out["phases"] = {"open": meter.end()}
    if not opened or not shown:
        out["error"] = "; ".join(failures) or f"not shown within {wait_s:.0f} s"
        return out

    meter.begin("zoom")
    centre = QPointF(w / 2, h / 2)
    for zoom in (canvas.zoom / 2, canvas.zoom, 0.25, 0.5, 1.0, 2.0, 4.0, 1.0, 0.1):
        canvas.set_zoom(zoom)
        canvas.centerOn(centre)
        pump(0.05)
    canvas.fit()
    pump(0.1)
    out["phases"]["zoom"] = meter.end()

    meter.begin("pan")
    canvas.set_zoom(1.0)
    canvas.centerOn(QPointF(w / 3, h / 3))
    pump(0.05)
    bar_x, bar_y = canvas.horizontalScrollBar(), canvas.verticalScrollBar()
    for i in range(40):
        bar_x.setValue(bar_x.value() + 60)
        bar_y.setValue(bar_y.value() + (30 if i % 2 else -10))
        pump(0.02)
    canvas.set_zoom(0.2)
    for i in range(20):
        bar_x.setValue(bar_x.value() - 80)
        pump(0.02)
    out["phases"]["pan"] = meter.end()

    meter.begin("paint")
    doc = window.current.doc
    vp = canvas.viewport()
    canvas.set_zoom(1.0)
    for s in range(strokes):
        cx, cy = w * (s + 1) / (strokes + 1), h / 2
        canvas.centerOn(QPointF(cx, cy))
        pump(0.03)
        points = [canvas.mapFromScene(QPointF(cx + 150 * math.cos(a / 10), cy + 150 * math.sin(a / 10)))
                  for a in range(63)]
        QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, points[0])
        for p in points[1:]:
            QTest.mouseMove(vp, p)
            pump(0.008)
        QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, points[-1])
        pump(0.03)
    canvas.fit()
    pump(0.1)
    out["phases"]["paint"] = meter.end()
    # after the phase: counting a 20,000 px label takes the GUI thread ~35 ms, the bench's, not the app's
    out["painted_pixels"] = int(np.count_nonzero(doc.label))

    if not segment:
        out["segment_error"] = "skipped (--segment-up-to)"
        return _accept(app, window, image_id, out, meter, pump, wait_s)
    meter.begin("segment")
    t_seg = time.perf_counter()
    window.segment()
    got = pump(wait_s, lambda: any(i == image_id for _, i in proposals) or any("proposal" in f for f in failures))
    done = [t for t, i in proposals if i == image_id]
    out["proposal_s"] = round(done[0] - t_seg, 1) if done else None
    out["proposal_shown"] = bool(done) and window.current.proposal is not None
    if not done:
        out["segment_error"] = "; ".join(failures) or (f"no proposal within {wait_s:.0f} s" if not got else "")
    pump(0.3)
    out["phases"]["segment"] = meter.end()
    out["phases"]["segment"]["waited_s"] = round(time.perf_counter() - t_seg, 1)

    return _accept(app, window, image_id, out, meter, pump, wait_s)


def _accept(app, window, image_id: str, out: dict, meter: _Meter, pump, wait_s: float) -> dict:
    meter.begin("accept")
    before = len(window.project.accepted_ids())
    window.accept_current()
    pump(wait_s, lambda: len(window.project.accepted_ids()) > before)
    pump(0.5)
    out["accepted"] = image_id in window.project.accepted_ids()
    out["phases"]["accept"] = meter.end()
    return out


def run(out: Path, images: list[Spec] | None = None, wait_s: float = 1800.0, strokes: int = 4,
        device: str | None = "cpu", keep: Path | None = None, trace: bool = False,
        segment_up_to: int | None = None) -> dict:
    """``segment_up_to``: press Segment only on images of at most that many pixels (None: all)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from segdesk.app import preload_engine
    from segdesk.bench.provenance import code_version, machine
    from segdesk.core import storage
    from segdesk.qt.main_window import MainWindow

    specs = images or parse_specs(",".join(DEFAULT_IMAGES))
    load_start = round(os.getloadavg()[0], 2)  # other programs' load lengthens every stall
    tmp = Path(tempfile.mkdtemp(prefix="segdesk-bench-large-"))
    try:
        t0 = time.perf_counter()
        paths = generate([Spec("rgb", 256)] + specs, tmp)
        generate_s = time.perf_counter() - t0
        app = QApplication.instance() or QApplication([])
        preload_engine()
        meter = _Meter()
        tracer = _StallTracer(meter) if trace else None
        ticker = QTimer(interval=TICK_MS)
        ticker.timeout.connect(meter.tick)
        ticker.start()
        window = MainWindow(settings=QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat), device=device)
        window.resize(1280, 900)
        window.actions_by_name["auto_propose"].setChecked(False)  # Segment is pressed in its phase: phases apart
        window.show()
        app.processEvents()
        # a small image first, not reported: the window's first project open imports and starts workers
        _one_image(app, window, paths[0], tmp / "project-warm-up", meter, wait_s, 1)
        meter.phases.clear()
        baseline = _rss_bytes()
        results = []
        for spec, path in zip(specs, paths[1:]):
            _release_freed_memory()  # the image before's freed memory must not count as this one's
            log.info("bench large: %s", spec.name)
            segment = segment_up_to is None or spec.size * spec.size <= segment_up_to
            results.append(_one_image(app, window, path, tmp / f"project-{spec.kind}{spec.size}", meter, wait_s,
                                      strokes, segment))
            print(json.dumps({"image": spec.name, **{k: v for k, v in results[-1].items() if k != "phases"}}),
                  file=sys.stderr, flush=True)
        device_text = window.status.device.text().removeprefix("device: ")
        window.close()
        ticker.stop()
        import torch

        from segdesk import __version__

        phases = [p for r in results for p in r.get("phases", {}).values()]
        peak = max([p["peak_rss_gb"] for p in phases], default=0.0)
        result = {
            "benchmark": "large",
            "command": " ".join(sys.argv),
            "segdesk": code_version(),
            "segdesk_version": __version__,
            "torch": torch.__version__,
            "machine": machine(),
            "device": device_text,
            "images": results,
            "generate_s": round(generate_s, 1),
            "rss_before_images_gb": _gb(baseline),
            "peak_rss_gb": peak,
            "process_peak_rss_gb": _gb(max(_hwm_bytes(), baseline)) if not meter.can_reset else None,
            "peak_rss_goal_gb": _gb(RSS_GOAL_BYTES),
            "longest_stall_ms": max([p["longest_stall_ms"] for p in phases], default=0.0),
            "stall_goal_ms": STALL_GOAL_MS,
            "peak_rss_per_phase_from": "VmHWM reset per phase" if meter.can_reset else "VmRSS sampled every tick",
            "tick_interval_ms": TICK_MS,
            "training": "off (auto-start out of reach)",
            "load_average_1min": {"start": load_start, "end": round(os.getloadavg()[0], 2)},
        }
        if tracer is not None:
            result["stall_stacks"] = tracer.stop()
        out = Path(out)
        storage.atomic_write_json(out, result)
        _plot(result, out.with_suffix(".png"))
        if keep is not None:
            shutil.copytree(tmp, keep, ignore=shutil.ignore_patterns("*.png", "*.tif"))
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _plot(result: dict, path: Path) -> None:
    from segdesk.bench import plot as charts

    panels = []
    for key, title, goal in (("peak_rss_gb", "peak resident memory per phase (GB)", _gb(RSS_GOAL_BYTES)),
                             ("longest_stall_ms", "longest GUI stall per phase (ms)", STALL_GOAL_MS)):
        series, ticks = [], []
        for r in result["images"]:
            values = [p[key] for p in r.get("phases", {}).values()]
            series.append(charts.Series(r["image"], values, bars=True))
            ticks = [(i + 1, name) for i, name in enumerate(r.get("phases", {}))]
        top = max([v for s in series for v in s.y if v is not None] + [goal]) * 1.15
        panels.append(charts.Panel(title, series, y_range=(0.0, top), x_ticks=ticks, hlines=[(goal, "goal")]))
    charts.save(panels, path)
