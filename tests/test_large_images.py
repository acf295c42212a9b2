"""Images of any size (issue 14): the paths taken above a size limit, run on small images with the
limit lowered, against what the ordinary path shows or computes."""

from __future__ import annotations

import numpy as np
import pytest

from segdesk.ml import inference, tiling
from segdesk.ml.config import TrainConfig
from segdesk.ml.inference import Predictor


def _blobs(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A smooth 8-bit image with bright blobs (what a model sees in practice, not white noise)."""
    import cv2

    rng = np.random.default_rng(seed)
    image = np.full(shape, 40, np.uint8)
    for _ in range(12):
        centre = (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0])))
        cv2.circle(image, centre, int(rng.integers(8, 30)), (200, 180, 220)[: image.ndim and 3], -1)
    return cv2.GaussianBlur(image, (0, 0), 2)


@pytest.mark.parametrize("scale", [1.0, 0.37, 1.6])
def test_streamed_proposal_matches_the_whole_image(monkeypatch, scale):
    """Above STREAM_PIXELS an image is predicted a band of tiles at a time, with no whole-image float
    copies: the classes and the uncertainty are those of the ordinary path."""
    import torch

    from segdesk.ml.uncertainty import uncertainty

    torch.manual_seed(0)
    predictor = Predictor.untrained(2, TrainConfig(base_width=4, working_scale=scale), device="cpu")
    pixels = _blobs((301, 257, 3))
    whole = predictor.predict(pixels, tile=40)  # tiles of 40 at working scale: many rows of tiles
    monkeypatch.setattr(inference, "STREAM_PIXELS", 3000)
    monkeypatch.setattr(inference, "_STRIP_PIXELS", 3000)  # full-size strips of a few rows
    calls = []
    original = inference.streaming.WorkingSource.rectangle
    monkeypatch.setattr(inference.streaming.WorkingSource, "rectangle",
                        lambda self, *a: calls.append(a) or original(self, *a))
    streamed = predictor.predict(pixels, tile=40)
    assert len(calls) > 3  # it did go a band at a time
    assert streamed.classes.shape == (301, 257) and streamed.classes.dtype == np.uint8
    assert streamed.confidence is None  # no float32 map of a large image
    agree = (streamed.classes == whole.classes).mean()
    if scale == 1.0:  # the same tiles, normalised with the same range: only ties to rounding differ
        assert agree > 0.999
        assert streamed.uncertainty == pytest.approx(whole.uncertainty, abs=2e-4)
    else:  # resized before normalising instead of after
        assert agree > 0.98
        assert streamed.uncertainty == pytest.approx(whole.uncertainty, abs=0.01)
    assert whole.uncertainty == uncertainty(whole.classes, whole.confidence)


def test_streamed_gray_16_bit_and_click_model(monkeypatch):
    """A 16-bit gray image through a click-aware model (empty prompts) streams like a colour one."""
    import torch

    torch.manual_seed(1)
    predictor = Predictor.untrained(1, TrainConfig(base_width=4, clicks=True), device="cpu")
    pixels = (_blobs((200, 180)).astype(np.uint16) * 200)
    whole = predictor.predict(pixels, tile=64)
    monkeypatch.setattr(inference, "STREAM_PIXELS", 3000)
    streamed = predictor.predict(pixels, tile=64)
    assert (streamed.classes == whole.classes).mean() > 0.999


# ----- display: a large image has no 8-bit copy; what is drawn is the same


@pytest.fixture
def large_limit(monkeypatch):
    """Images over 1,000 pixels take the large-image paths."""
    from segdesk.core import display
    from segdesk.qt import canvas, overlay

    for module in (display, canvas, overlay):
        monkeypatch.setattr(module, "LARGE_PIXELS", 1000)
    return 1000


def test_render_of_a_large_image_is_lazy_with_the_same_values(large_limit):
    from segdesk.core import display
    from segdesk.core.dicom_image import DicomImage
    from segdesk.core.image import Image

    rng = np.random.default_rng(0)
    cases = [
        (Image(rng.integers(0, 4000, (150, 120)).astype(np.uint16), "x"), None),
        (Image(rng.integers(0, 255, (150, 120, 3)).astype(np.uint8), "x"), None),
        (Image(rng.normal(size=(150, 120)).astype(np.float32), "x"), (-1.0, 1.0)),
        (DicomImage(pixels=rng.integers(-1000, 1000, (150, 120)).astype(np.int16), path="x", invert=True),
         (-160.0, 240.0)),
    ]
    for image, window in cases:
        lazy = display.render(image, window)
        assert isinstance(lazy, display.LazyDisplay) and lazy.shape[:2] == (150, 120)
        assert lazy.nbytes <= 65536  # a table at most, never a copy of the image
        monkey_limit = display.LARGE_PIXELS
        display.LARGE_PIXELS = 10**9
        try:
            whole = display.render(image, window if window is not None or image.bit_depth == 8
                                   else display.auto_window(image.pixels))
        finally:
            display.LARGE_PIXELS = monkey_limit
        part = lazy[7:140:4, 3:119:2]
        expected = whole[7:140:4, 3:119:2]
        np.testing.assert_array_equal(part, expected if image.is_color else expected[..., 0])


def _scene_image(canvas, zoom: float):
    """The canvas scene (image and overlays) drawn at ``zoom``, as the view would show it."""
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QColor, QImage, QPainter

    rect = canvas._image_item.boundingRect()
    out = QImage(int(rect.width() * zoom), int(rect.height() * zoom), QImage.Format.Format_ARGB32)
    out.fill(QColor("black"))
    painter = QPainter(out)
    canvas.scene().render(painter, QRectF(out.rect()), rect)
    painter.end()
    return out


def _pixels(qimage) -> np.ndarray:
    ptr = qimage.constBits()
    return np.frombuffer(ptr, np.uint8).reshape(qimage.height(), qimage.bytesPerLine())[:, :qimage.width() * 4] \
        .reshape(qimage.height(), qimage.width(), 4).copy()


@pytest.mark.parametrize("outline", [False, True])
def test_large_image_and_label_are_drawn_as_ordinary_ones_at_actual_size(qtbot, monkeypatch, outline):
    from segdesk.qt import canvas as canvas_module
    from segdesk.qt import overlay
    from segdesk.qt.canvas import Canvas, LargeImageItem
    from segdesk.qt.overlay import LabelOverlayItem, colour_table, proposal_tables

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (90, 130, 3), np.uint8)
    label = np.zeros((90, 130), np.uint8)
    label[20:50, 30:90] = 2
    label[60:70, 10:40] = 1
    proposal = np.ones((90, 130), np.uint8)
    proposal[10:60, 50:120] = 2
    fill, edge = proposal_tables([(230, 159, 0)])
    drawn = {}
    for limit in (10**9, 1000):  # ordinary, then large
        monkeypatch.setattr(canvas_module, "LARGE_PIXELS", limit)
        monkeypatch.setattr(overlay, "LARGE_PIXELS", limit)
        canvas = Canvas()
        qtbot.addWidget(canvas)
        canvas.set_image(rgb)
        canvas.set_proposal(LabelOverlayItem(proposal, fill, edge_lut=edge, dash=4))
        item = LabelOverlayItem(label, colour_table([(230, 159, 0)]))
        item.set_outline(outline)
        canvas.set_overlay(item)
        assert isinstance(canvas._image_item, LargeImageItem) == (limit == 1000)
        drawn[limit] = (_pixels(_scene_image(canvas, 1.0)), _pixels(_scene_image(canvas, 2.0)), item)
    for i in range(2):
        np.testing.assert_array_equal(drawn[1000][i], drawn[10**9][i])
    for x, y in [(0, 0), (30, 20), (29, 20), (89, 49), (10, 60), (129, 89)]:
        assert drawn[1000][2].pixel_colour(x, y) == drawn[10**9][2].pixel_colour(x, y)


def test_large_image_zoomed_out_draws_a_sample_of_it(qtbot, large_limit):
    from segdesk.qt.canvas import Canvas
    from segdesk.qt.overlay import LabelOverlayItem, colour_table

    rgb = np.zeros((400, 600, 3), np.uint8)
    rgb[:, :300] = (200, 0, 0)  # left red, right blue
    rgb[:, 300:] = (0, 0, 200)
    label = np.zeros((400, 600), np.uint8)
    label[:200] = 2  # top half labelled
    canvas = Canvas()
    qtbot.addWidget(canvas)
    canvas.set_image(rgb)
    canvas.set_overlay(LabelOverlayItem(label, colour_table([(0, 255, 0)])))
    canvas.overlay.setOpacity(1.0)
    shown = _pixels(_scene_image(canvas, 0.1))  # 60 x 40, every 8th pixel
    assert shown.shape[:2] == (40, 60)
    # (B, G, R) in memory
    assert tuple(shown[30, 10, :3]) == (0, 0, 200)  # bottom left: the image's red
    assert tuple(shown[30, 50, :3]) == (200, 0, 0)  # bottom right: its blue
    assert tuple(shown[5, 10, :3]) == (0, 255, 0)  # top: the label's colour


def test_painting_a_large_image_in_the_window(qtbot, tmp_path, large_limit):
    """A project image over the limit opens with a lazy display, a stroke paints the label and
    the overlay shows it, and the window zooms and pans without an error."""
    from PySide6.QtCore import QPointF, QSettings, Qt
    from PySide6.QtTest import QTest

    from segdesk.core import display
    from segdesk.qt.canvas import LargeImageItem
    from segdesk.qt.main_window import MainWindow
    from tests.conftest import disc_project, show_window

    project = disc_project(tmp_path, ["lesion"], n_images=1)
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    show_window(qtbot, w)
    assert w.open_project(project.root)
    qtbot.waitUntil(lambda: w.current is not None, timeout=20_000)
    h, wd = w.current.doc.shape
    assert h * wd > large_limit
    assert isinstance(w.canvas._image_item, LargeImageItem)
    w.canvas.set_zoom(4.0)
    w.canvas.centerOn(QPointF(wd / 2, h / 2))
    vp = w.canvas.viewport()
    points = [w.canvas.mapFromScene(QPointF(wd / 2 + dx, h / 2)) for dx in (-6, -3, 0, 3, 6)]
    QTest.mousePress(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, points[0])
    for p in points[1:]:
        QTest.mouseMove(vp, p)
    QTest.mouseRelease(vp, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, points[-1])
    y, x = int(h / 2), int(wd / 2)
    assert w.current.doc.label[y, x] == 2
    colour = w.canvas.overlay.pixel_colour(x, y)
    assert (colour.red(), colour.green(), colour.blue()) == w.project.classes[0].rgb
    shown = w.canvas.viewport().grab().toImage()
    centre = shown.pixelColor(w.canvas.mapFromScene(QPointF(x + 0.5, y + 0.5)))
    assert centre.red() > centre.blue()  # the class colour (orange) over the gray image
    w.canvas.fit()
    qtbot.wait(1)
    assert isinstance(display.render(w.current.image, w.current.window), display.LazyDisplay)


def test_a_large_image_is_drawn_fitted_without_computing_on_the_gui_thread(qtbot, tmp_path, large_limit):
    """The reader thread draws a large image and its label at the step the window fits them at: the
    first paint only slices (a 10,000 px image's took 20-50 ms of the GUI thread), and shows what
    computing it there would."""
    from PySide6.QtCore import QSettings

    from segdesk.qt.main_window import MainWindow
    from tests.conftest import disc_project, show_window, write_disc_image

    project = disc_project(tmp_path, ["lesion"], n_images=1)
    write_disc_image(tmp_path / "images" / "big.png", size=(2400, 3200), seed=4)
    project.add_images([tmp_path / "images" / "big.png"])
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    show_window(qtbot, w)
    assert w.open_project(project.root)
    qtbot.waitUntil(lambda: w.current is not None, timeout=20_000)
    big = next(e.id for e in w.project.images if e.shape == (2400, 3200))
    with qtbot.waitSignal(w.session.image_shown, timeout=20_000):
        w.show_image(big)
    views = [w.canvas._image_item._view, w.canvas.overlay._view]
    assert w.canvas.fit_step((2400, 3200)) >= 2  # zoomed out: a sampled level
    computed = []
    for view in views:
        make = view._make
        view._make = lambda *box, make=make: computed.append(box) or make(*box)
    primed = w.canvas.viewport().grab().toImage()
    assert computed == []  # the first paint sliced what the reader drew
    for view in views:
        view.invalidate()
    assert w.canvas.viewport().grab().toImage() == primed  # the same pixels as drawn here
    assert computed
    w.close()


def test_bench_large_images_option_says_how_to_fix_it():
    from segdesk.bench.large import Spec, parse_specs

    assert parse_specs("rgb:10000, gray:20000") == [Spec("rgb", 10000), Spec("gray", 20000)]
    for bad in ("rgb", "cmyk:100", "gray:12", "rgb:1e4", ""):
        with pytest.raises(ValueError, match="rgb:10000"):
            parse_specs(bad)


@pytest.mark.parametrize("zoom", [0.25, 1.0])
def test_large_overlay_kept_view_follows_edits(qtbot, large_limit, zoom):
    """What a large overlay keeps of its last view is recomputed where the label changes: after an
    edit it draws what a new overlay of the edited label draws, zoomed out and at actual size."""
    from segdesk.qt.canvas import Canvas
    from segdesk.qt.overlay import LabelOverlayItem, proposal_tables

    fill, edge = proposal_tables([(230, 159, 0), (0, 114, 178)])
    label = np.ones((240, 320), np.uint8)
    label[40:120, 60:200] = 2
    canvas = Canvas()
    qtbot.addWidget(canvas)
    canvas.set_image(np.full((240, 320, 3), 90, np.uint8))
    item = LabelOverlayItem(label, fill, edge_lut=edge, dash=4)
    canvas.set_proposal(item)
    _scene_image(canvas, zoom)  # the view is kept
    label[100:180, 150:260] = 3  # an edit, as a stroke or a click makes it
    item.refresh((100, 150, 180, 260))
    after = _pixels(_scene_image(canvas, zoom))
    canvas.set_proposal(LabelOverlayItem(label.copy(), fill, edge_lut=edge, dash=4))
    np.testing.assert_array_equal(after, _pixels(_scene_image(canvas, zoom)))


def test_nearest_crop_is_that_part_of_the_whole_resize():
    import cv2

    from segdesk.ml.streaming import nearest_crop

    rng = np.random.default_rng(0)
    for _ in range(50):
        height, width = rng.integers(5, 300, 2)
        h, w = rng.integers(3, 400, 2)
        mask = rng.integers(0, 4, (height, width)).astype(np.uint8)
        whole = cv2.resize(mask, (int(w), int(h)), interpolation=cv2.INTER_NEAREST)
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
        np.testing.assert_array_equal(nearest_crop(mask, (h, w), (y0, x0, y1, x1)), whole[y0:y1, x0:x1])


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_click_on_a_large_image_is_answered_as_on_a_small_one(monkeypatch, scale):
    """Above STREAM_PIXELS a click normalises only its window (no whole-image float copy) and looks at
    the previous mask near the clicks only: the answer is the ordinary path's."""
    import torch

    from segdesk.core.clicks import Click

    torch.manual_seed(2)
    predictor = Predictor.untrained(1, TrainConfig(base_width=4, clicks=True, working_scale=scale), device="cpu")
    pixels = _blobs((700, 640))
    previous = (pixels > 120).astype(np.uint8)
    clicks = [Click(300, 200, 1, True), Click(420, 260, 1, False)]
    ordinary = predictor.refine(pixels, clicks, previous, key="a")
    monkeypatch.setattr(inference, "STREAM_PIXELS", 3000)
    calls = []
    original = inference.streaming.WorkingSource.rectangle
    monkeypatch.setattr(inference.streaming.WorkingSource, "rectangle",
                        lambda self, *a: calls.append(a) or original(self, *a))
    large = predictor.refine(pixels, clicks, previous, key="b")
    assert len(calls) == 1 and large.box == ordinary.box
    y0, x0, y1, x1 = large.box
    assert (y1 - y0) * (x1 - x0) < pixels.size  # a window, not the image
    agree = (large.classes == ordinary.classes).mean()
    # at scale 0.5 the two paths resample the window's input slightly differently; fitting the answer
    # to the clicks (click_refinement.py) carries that a little further on this untrained model
    assert agree == 1.0 if scale == 1.0 else agree > 0.99


@pytest.mark.parametrize("height", [161, 221, 301])
def test_band_rows_are_the_blend_of_every_tile_over_them(height):
    """The reused band gives each working row the window-weighted mean of the tiles over it, also
    where the last row of tiles starts only a few rows below the one before (161 rows, tiles of 40:
    it starts 1 row lower, so most of the band moves up)."""
    import torch

    from segdesk.ml import streaming

    rng = np.random.default_rng(height)
    x = rng.random((3, height, 97)).astype(np.float32)

    def run(batch):  # a deterministic stand-in for a model whose output depends on where the tile is
        return torch.stack([batch[:, 0] * 2 - batch[:, 1], batch[:, 2] + batch[:, :, :1, :1].mean(1)], dim=1)

    window = tiling.window(40, 40, torch.device("cpu"))
    parts = streaming.working_rows(streaming.NormalisedImage(x), run, 0, 40, 2, 0.25,
                                   lambda h, w: window, torch.device("cpu"))
    got = torch.cat([part.clone() for _, part in parts], dim=1)
    total, weight = torch.zeros(2, height, 97), torch.zeros(height, 97)
    for y in streaming.tile_starts(height, 40, 0.25):
        for c in streaming.tile_starts(97, 40, 0.25):
            tile = torch.from_numpy(x[None, :, y:y + 40, c:c + 40].copy())
            total[:, y:y + 40, c:c + 40] += run(tile)[0].softmax(0) * window
            weight[y:y + 40, c:c + 40] += window
    assert got.shape == (2, height, 97)
    assert torch.allclose(got, total / weight, atol=1e-6)


def test_a_streamed_proposal_hands_its_freed_buffers_back(monkeypatch):
    """glibc keeps freed heap memory resident: after a streamed proposal of a 20,000 px wide image
    75-110 MB of band and strip buffers stayed beside the image (docs/benchmarks.md, Large images)."""
    import torch

    from segdesk.core import memory

    torch.manual_seed(0)
    predictor = Predictor.untrained(2, TrainConfig(base_width=4), device="cpu")
    calls = []
    monkeypatch.setattr(inference, "release_freed_memory", lambda: calls.append(memory.release_freed_memory()))
    pixels = _blobs((120, 160, 3))
    predictor.predict(pixels, tile=64)
    assert len(calls) == 1  # every proposal (under 1 ms)
    monkeypatch.setattr(inference, "STREAM_PIXELS", 3000)
    predictor.predict(pixels, tile=64)
    assert len(calls) == 2
    monkeypatch.setattr(inference.streaming, "classes_of", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        predictor.predict(pixels, tile=64)
    assert len(calls) == 3  # also when the proposal fails or is cancelled
