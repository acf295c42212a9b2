"""Checkpoints: round trip, crash fallback, and refusing anything that could run code."""

import hashlib
import json
import logging
import pickle
from pathlib import Path

import pytest
import torch

from segdesk.core.errors import CheckpointError
from segdesk.ml.checkpoints import CheckpointStore, check_compatible
from segdesk.ml.unet import UNet


def _meta(model: UNet) -> dict:
    return {"arch": model.arch_dict(), "classes": ["lesion"], "normalisation": "percentile-0.5-99.5",
            "working_scale": 0.5, "val_dice": 0.75, "val_dice_per_class": [0.75, None], "step": 10}


def _model(seed: int) -> UNet:
    torch.manual_seed(seed)
    return UNet(n_outputs=2, depth=2, base_width=4)


class MakesMarker:
    """A pickle payload that creates a file when unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_round_trip(tmp_path):
    store = CheckpointStore(tmp_path / "models")
    model = _model(0)
    checkpoint_id = store.save(model.state_dict(), _meta(model))
    assert checkpoint_id == "0001" and store.current_id() == "0001"
    state_dict, meta = store.load("0001")
    for name, tensor in model.state_dict().items():
        assert torch.equal(state_dict[name], tensor), name
    assert meta["working_scale"] == 0.5 and meta["arch"] == model.arch_dict()
    assert meta["val_dice_per_class"] == [0.75, None] and meta["id"] == "0001" and meta["created"] > 0
    assert [m["id"] for m in store.list()] == ["0001"]


def test_ids_count_up_and_pointer_moves(tmp_path):
    store = CheckpointStore(tmp_path)
    ids = [store.save(_model(i).state_dict(), _meta(_model(i))) for i in range(3)]
    assert ids == ["0001", "0002", "0003"] and store.current_id() == "0003"
    store.set_current("0001")
    assert store.load_current()[0] == "0001"
    with pytest.raises(CheckpointError):
        store.set_current("0009")


def test_metadata_is_the_commit_mark(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(_model(0).state_dict(), _meta(_model(0)))
    (tmp_path / "0002.safetensors").write_bytes(b"half-written")  # crash before its JSON
    assert [m["id"] for m in store.list()] == ["0001"]
    assert store.save(_model(1).state_dict(), _meta(_model(1))) == "0003"  # never reuses a number


def test_corrupt_current_falls_back_to_previous(tmp_path, caplog):
    store = CheckpointStore(tmp_path)
    first = _model(0)
    store.save(first.state_dict(), _meta(first))
    store.save(_model(1).state_dict(), _meta(_model(1)))
    weights = tmp_path / "0002.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        store.load("0002")
    with caplog.at_level(logging.WARNING):
        checkpoint_id, state_dict, _ = store.load_current()
    assert checkpoint_id == "0001"
    assert torch.equal(state_dict["head.weight"], first.state_dict()["head.weight"])
    assert "0002" in caplog.text


def test_flipped_byte_is_caught(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(_model(0).state_dict(), _meta(_model(0)))
    data = bytearray((tmp_path / "0001.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (tmp_path / "0001.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        store.load("0001")
    assert store.load_current() is None


def test_missing_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path)
    assert store.load_current() is None and store.current_id() is None
    with pytest.raises(CheckpointError, match="does not exist"):
        store.load("0001")
    with pytest.raises(CheckpointError):
        store.load("../0001")


def _plant(tmp_path: Path, checkpoint_id: str, data: bytes) -> CheckpointStore:
    """A complete-looking checkpoint whose weights file holds ``data`` (no checksum recorded)."""
    (tmp_path / f"{checkpoint_id}.safetensors").write_bytes(data)
    meta = {"id": checkpoint_id, "arch": UNet(n_outputs=2, depth=2, base_width=4).arch_dict()}
    (tmp_path / f"{checkpoint_id}.json").write_text(json.dumps(meta))
    return CheckpointStore(tmp_path)


def test_torch_save_file_is_refused(tmp_path):
    torch.save(_model(0).state_dict(), tmp_path / "0001.safetensors")  # zip format
    store = _plant(tmp_path, "0001", (tmp_path / "0001.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="pickle payload; segdesk loads only safetensors"):
        store.load("0001")


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_pickle_is_refused_without_running_it(tmp_path, protocol):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(MakesMarker(marker), protocol=protocol)
    store = _plant(tmp_path, "0001", payload)
    with pytest.raises(CheckpointError):
        store.load("0001")
    assert store.load_current() is None
    assert not marker.exists()
    pickle.loads(payload)  # control: the payload really is live
    assert marker.exists()


def test_check_compatible():
    meta = _meta(UNet(n_outputs=3, depth=2, base_width=4))
    check_compatible(meta, n_classes=2)
    with pytest.raises(CheckpointError, match="trained for 2 classes; this project has 1"):
        check_compatible(meta, n_classes=1)
    with pytest.raises(CheckpointError, match="architecture"):
        check_compatible({**meta, "arch": {"name": "resnet"}}, n_classes=2)
    with pytest.raises(CheckpointError, match="normalisation"):
        check_compatible({**meta, "normalisation": "z-score"}, n_classes=2)


def test_a_copied_checkpoint_gets_its_own_id_times_and_hash(tmp_path):
    """Callers copy a checkpoint's metadata whole (demo install, bench seeding): the store's own keys
    are written anew, never taken from the copied metadata."""
    model = UNet(n_outputs=2, depth=2, base_width=4)
    first = CheckpointStore(tmp_path / "a")
    first.save(model.state_dict(), _meta(model))
    _, state, meta = first.load_current()
    second = CheckpointStore(tmp_path / "b")
    second.save(state, {**meta, "weights_sha256": "0" * 64, "weights_bytes": 1, "created": 0.0})
    copied = second.list()[-1]
    stored = (tmp_path / "b" / f"{copied['id']}.safetensors").read_bytes()
    assert copied["weights_sha256"] == hashlib.sha256(stored).hexdigest() and copied["weights_bytes"] == len(stored)
    assert copied["created"] > 0 and copied["id"] == "0001"
    second.load(copied["id"])  # the hash check passes: the stored hash is of the stored weights
