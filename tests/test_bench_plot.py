"""The benchmark PNGs: real files that read back, one 900 x 300 panel per chart, from small result dicts."""

import cv2

from segdesk.bench import latency, loop_report
from segdesk.bench import plot as charts
from segdesk.bench.commands import brush_plot


def _read(path):
    assert path.is_file() and path.stat().st_size > 0
    image = cv2.imread(str(path))
    assert image is not None
    return image


def test_loop_plot_writes_a_png_from_a_result_dict(tmp_path):
    rows = [{"dice": d, "dice_no_gate": m, "effort": e, "scratch_effort": 10.0, "region_effort": 2 * e,
             "region_scratch_effort": 10.0} for d, m, e in [(0.0, 0.0, 10.0), (0.0, 0.4, 9.0), (0.7, 0.7, 4.0)]]
    result = {"per_image": rows, "data": "/x/discs", "budget": {"steps": 6}, "dice_last10": 0.23,
              "dice_last10_model": 0.37, "effort_ratio": 0.77, "region_effort_ratio": 1.53, "init": "scratch"}
    path = loop_report.plot(result, tmp_path / "loop.png")
    assert _read(path).shape == (2 * charts.PANEL_HEIGHT, charts.WIDTH, 3)


def test_bar_log_gap_and_empty_panels_render(tmp_path):
    latency.plot({"device": "cpu", "sizes": [{"size": 512, "seconds": 0.05, "gflop_per_s": 40.0},
                                             {"size": 1024, "seconds": 0.3, "gflop_per_s": 42.0}]},
                 tmp_path / "latency.png")
    brush_plot({"image_size": [256, 256], "median_ms": 4.0, "p99_ms": 9.0, "max_ms": 12.0}, tmp_path / "brush.png")
    charts.save([charts.Panel("gap", [charts.Series("a", [1.0, None, 3.0])]),
                 charts.Panel("nothing yet", [charts.Series("a", [None, None])])], tmp_path / "other.png")
    assert _read(tmp_path / "latency.png").shape == (2 * charts.PANEL_HEIGHT, charts.WIDTH, 3)
    assert _read(tmp_path / "brush.png").shape == (charts.PANEL_HEIGHT, charts.WIDTH, 3)
    assert _read(tmp_path / "other.png").shape == (2 * charts.PANEL_HEIGHT, charts.WIDTH, 3)
