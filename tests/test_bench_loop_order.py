"""``segdesk bench loop --order uncertain``: the next image is the current model's least sure."""

import json
from types import SimpleNamespace

import numpy as np

from segdesk.bench import loop
from segdesk.cli import main
from segdesk.core.project import Project
from segdesk.ml.inference import Prediction
from segdesk.ml.uncertainty import uncertainty
from tests.conftest import write_disc_image
from tests.test_bench_loop import TINY, restore_threads  # noqa: F401 (autouse: torch threads restored)


def test_the_least_sure_of_the_sample_is_next(tmp_path):
    for i in range(4):
        write_disc_image(tmp_path / f"img{i}.png", seed=i)
    project = Project.create(tmp_path / "proj", ["disc"])
    entries = project.add_images([tmp_path / f"img{i}.png" for i in range(4)]).added
    unsure_of = {entries[0].id: 0.99, entries[1].id: 0.6, entries[2].id: 0.95, entries[3].id: 0.6}
    by_size = {}

    class Fake:  # a predictor whose confidence in each image is chosen: image k is told by its size
        postprocess = {"propose": True}

        def predict(self, pixels):
            image_id = by_size[pixels.shape]
            conf = np.full(pixels.shape[:2], unsure_of[image_id], np.float32)
            classes = np.ones(pixels.shape[:2], np.uint8)
            return Prediction(classes, conf, "ck", uncertainty=uncertainty(classes, conf))

    # the discs all have one size: give each image its own size through a stand-in project reader
    pixels = {e.id: np.zeros((10 + k, 10), np.uint8) for k, e in enumerate(entries)}
    by_size.update({p.shape: i for i, p in pixels.items()})
    reader = SimpleNamespace(read_image=lambda e: SimpleNamespace(pixels=pixels[e.id]))
    remaining = [(f"s{k}", e) for k, e in enumerate(entries)]
    fake = Fake()
    pick, scores = loop.least_sure(fake, reader, remaining, np.random.default_rng(0))
    assert remaining[pick][1].id == entries[1].id  # confidence 0.6: the least sure; ties go to the first
    assert scores == {e.id: round(1 - unsure_of[e.id], 4) for e in entries}
    assert fake.postprocess == {"propose": True}  # scored raw, then restored
    loop.ORDER_SAMPLE, before = 2, loop.ORDER_SAMPLE
    try:  # a bounded sample: at most ORDER_SAMPLE images are predicted per step
        _, scores = loop.least_sure(fake, reader, remaining, np.random.default_rng(0))
        assert len(scores) == 2
    finally:
        loop.ORDER_SAMPLE = before


def test_bench_loop_order_uncertain_labels_the_same_images_least_sure_first(tmp_path, discs, capsys):
    data = discs
    out = tmp_path / "result.json"
    code = main(["bench", "loop", "--data", str(data), "--images", "4", "--train-steps", "4",
                 "--device", "cpu", "--threads", "1", "--seed", "3", "--order", "uncertain", *TINY,
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    rows = result["per_image"]
    assert result["order"] == "uncertain" and "least sure" in result["order_rule"]
    given = [s for s, _, _ in [loop.find_pairs(data)[i] for i in np.random.default_rng(3).permutation(5)[:4]]]
    assert rows[0]["image"] == given[0]  # no model yet: as given
    assert sorted(r["image"] for r in rows) == sorted(given)  # the same images, in another order
    assert rows[0]["order_scored"] == 0 and rows[0]["uncertainty"] is None
    for r in rows[1:]:  # a model exists after the first image: the remaining ones were scored
        assert r["checkpoint"] is not None
        assert r["order_scored"] == min(loop.ORDER_SAMPLE, 4 - r["index"] + 1) or r["index"] == 4
        if r["order_scored"]:
            assert 0.0 <= r["uncertainty"] <= 0.5
    assert main(["bench", "loop", "--data", str(data), "--order", "random", "--out", str(out)]) == 2
