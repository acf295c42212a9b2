"""Everything that lives as long as the window is bounded: image cache, plot, undo, proposals."""

from __future__ import annotations

import numpy as np

from segdesk.core.history import History
from segdesk.core.label_document import LabelDocument
from segdesk.core.project import Project
from segdesk.qt.metric_plot import MAX_POINTS, MetricPlot
from tests.conftest import write_disc_image


def test_training_image_cache_stays_within_its_byte_budget(tmp_path, torch_one_thread):
    from segdesk.ml.data import LabelledSet

    images = tmp_path / "images"
    images.mkdir()
    truths = [write_disc_image(images / f"d{i:02d}.png", size=(64, 64), seed=i) for i in range(12)]
    project = Project.create(tmp_path / "proj", ["disc"])
    project.add_images([images])
    for entry, truth in zip(project.images, truths):
        project.accept(entry.id, truth + 1)
    one_image = 64 * 64 * (3 * 4 + 1)  # float32 x 3 channels + uint8 label
    data = LabelledSet(project, crop_size=32, working_scale=1.0, cache_bytes=3 * one_image + 100)
    rng = np.random.default_rng(0)
    for _ in range(60):
        data.sample(rng)
        assert data._cached_bytes <= data.cache_bytes and len(data._cache) <= 3
    assert data._cached_bytes == sum(item.nbytes for item in data._cache.values())


def test_metric_plot_thins_old_points(qapp):
    plot = MetricPlot()
    for step in range(20 * MAX_POINTS):
        plot.add(step, 1.0 / (step + 1), 0.5)
    assert len(plot.loss) <= MAX_POINTS and len(plot.dice) <= MAX_POINTS
    assert plot.loss[0][0] == 0 and plot.loss[-1][0] == 20 * MAX_POINTS - 1  # the whole run, thinned


def test_undo_history_is_capped_in_steps_and_bytes():
    doc = LabelDocument(np.zeros((256, 256), np.uint8), History(max_steps=50, max_bytes=1 << 20))
    for i in range(500):
        doc.begin_stroke(2 + i % 2, 30.0)
        doc.stroke_to(float(i % 256), 10.0)
        doc.stroke_to(float((i * 7) % 256), 250.0)
        doc.end_stroke()
    assert len(doc.history) <= 50 and doc.history.nbytes <= 1 << 20
