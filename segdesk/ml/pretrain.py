"""Learning from the project's own images, which it has before their labels (self-supervised).

The U-Net learns to restore hidden patches of the project's images, masked-image modelling as
SimMIM trains: half the 16-px patches of each crop are set to zero, a 1x1 restoration head on the
decoder's last features predicts the whole crop, and the loss is the L1 error on the hidden patches
(plus a tenth of it elsewhere). The head is dropped afterwards; a new project's trainer (the
window's, or ``segdesk train``) starts from the encoder and decoder instead of fresh weights.
``segdesk pretrain`` runs it, on a GPU server or while nobody labels. Measured on Kvasir polyps
(docs/benchmarks.md, "Pretraining on the project's own images"): it pays at the planned working
scale, so crops are taken at that scale once a label has planned it; before any label, at a
random scale between 1 and the smallest a plan could choose (a third of the gain, one seed).

The result is one file, ``models/pretrained.safetensors`` (weights without the segmentation head,
the restoration head for a later run to continue with, the network's size and the steps taken in
its metadata), written atomically every few hundred steps, so a stopped run keeps what it learnt.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from segdesk.core import storage
from segdesk.core.errors import SegdeskError, StorageError
from segdesk.ml import precision
from segdesk.ml.normalise import NORMALISATION, normalise_hwc
from segdesk.ml.planning import ScaleRule
from segdesk.ml.unet import UNet

log = logging.getLogger(__name__)

FILE_NAME = "pretrained.safetensors"
PATCH = 16  # working pixels a side of a hidden patch
MASK_RATIO = 0.5
VISIBLE_WEIGHT = 0.1  # of the L1 error on the patches left visible
SAVE_EVERY = 250  # steps
MAX_IMAGE_PIXELS = 4096 * 4096  # larger images are left out: one would fill the cache
_CACHE_BYTES = 768 << 20
_HEAD = "head."
_RESTORATION_HEAD = "restoration_head."


def pretrained_path(models_dir: str | Path) -> Path:
    return Path(models_dir) / FILE_NAME


class ProjectImages:
    """The project's images, normalised (at the planned scale when one is given), for random crops;
    kept in a cache bounded in bytes. Images that cannot be read are left out (logged once)."""

    def __init__(self, project, scale_rule: ScaleRule | None = None, cache_bytes: int = _CACHE_BYTES):
        self.project = project
        self.scale_rule = scale_rule
        self.ids = [e.id for e in project.images if e.height * e.width <= MAX_IMAGE_PIXELS]
        if len(self.ids) < len(project.images):
            log.info("pretraining leaves out %d image(s) over %d pixels", len(project.images) - len(self.ids),
                     MAX_IMAGE_PIXELS)
        self._cache: dict[str, np.ndarray] = {}
        self._bytes = 0
        self._cache_bytes = cache_bytes

    def _load(self, image_id: str) -> np.ndarray | None:
        if image_id in self._cache:
            return self._cache[image_id]
        try:
            pixels = self.project.read_image(self.project.image(image_id)).pixels
        except SegdeskError as exc:
            log.warning("pretraining skips %s: %s", image_id, exc)
            return None
        image = normalise_hwc(pixels).astype(np.float32, copy=False)
        if self.scale_rule is not None:
            image = self.scale_rule.resize(image)
        while self._cache and self._bytes + image.nbytes > self._cache_bytes:
            self._bytes -= self._cache.pop(next(iter(self._cache))).nbytes
        self._cache[image_id] = image
        self._bytes += image.nbytes
        return image

    def crop(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """A size x size x 3 crop of a random image, zero-padded where the image is smaller.
        SegdeskError when no image can be read."""
        while self.ids:
            index = int(rng.integers(len(self.ids)))
            image = self._load(self.ids[index])
            if image is None:
                del self.ids[index]
                continue
            if self.scale_rule is None:  # a random scale a plan could choose (module docstring)
                shorter = min(image.shape[:2])
                low = math.log(min(1.0, max(size / shorter, 0.1)))
                scale = math.exp(rng.uniform(low, 0.0))
                if scale < 0.999:
                    h, w = image.shape[:2]
                    image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                       interpolation=cv2.INTER_AREA)
            h, w = image.shape[:2]
            y = int(rng.integers(0, max(0, h - size) + 1))
            x = int(rng.integers(0, max(0, w - size) + 1))
            out = np.zeros((size, size, 3), np.float32)
            part = image[y:y + size, x:x + size]
            out[:part.shape[0], :part.shape[1]] = part
            return out[:, ::-1] if rng.random() < 0.5 else out
        raise SegdeskError("There are no readable images to learn from.")


def hidden_patches(batch: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """batch x 1 x size x size: 1 where a patch is hidden (MASK_RATIO of the PATCH-px patches)."""
    cells = -(-size // PATCH)
    hidden = torch.from_numpy(rng.random((batch, 1, cells, cells)) < MASK_RATIO).float()
    return hidden.repeat_interleave(PATCH, 2).repeat_interleave(PATCH, 3)[..., :size, :size]


def restoration_loss(restored: torch.Tensor, clean: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """L1 error on the hidden patches, plus VISIBLE_WEIGHT of it on the whole crop."""
    error = (restored.float() - clean).abs()
    on_hidden = (error * hidden).sum() / (hidden.sum() * clean.shape[1]).clamp(min=1.0)
    return on_hidden + VISIBLE_WEIGHT * error.mean()


class Pretrainer:
    """Restoration training of ``model``'s encoder and decoder (its segmentation head is not used)."""

    def __init__(self, model: UNet, images: ProjectImages, device: torch.device, number_format: str,
                 crop_size: int, batch_size: int, lr: float, weight_decay: float, seed: int = 0):
        self.model = model
        self.images = images
        self.device = device
        self.number_format = number_format
        self.crop_size = crop_size
        self.batch_size = batch_size
        self.head = nn.Conv2d(model.widths[0], 3, kernel_size=1).to(device)
        parameters = [p for n, p in model.named_parameters() if not n.startswith(_HEAD)]
        self.optimizer = torch.optim.AdamW(parameters + list(self.head.parameters()), lr=lr,
                                           weight_decay=weight_decay)
        self.rng = np.random.default_rng([seed, 7])

    def step(self) -> float:
        """One optimisation step on a batch of masked crops; its loss."""
        size, n = self.crop_size, self.batch_size
        crops = np.stack([self.images.crop(self.rng, size) for _ in range(n)]).transpose(0, 3, 1, 2)
        clean = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device)
        hidden = hidden_patches(n, size, self.rng).to(self.device)
        contrast = torch.from_numpy(self.rng.uniform(0.8, 1.2, (n, 1, 1, 1))).float().to(self.device)
        seen = clean * contrast * (1.0 - hidden)
        prompts = torch.zeros((n, self.model.prompt_channels, size, size), device=self.device)
        self.model.train()
        with precision.autocast(self.device, self.number_format):
            features = self.model.decoder(self.model.encoder(torch.cat([seen, prompts], dim=1)))
            restored = self.head(features)
        loss = restoration_loss(restored, clean, hidden)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def _size_of(model: UNet) -> dict[str, str]:
    return {"depth": str(model.depth), "base_width": str(model.base_width), "in_channels": str(model.in_channels),
            "normalisation": NORMALISATION}


def save_pretrained(models_dir: str | Path, model: UNet, head: nn.Module, steps: int) -> None:
    """Write the encoder's and decoder's weights (prompt inputs left out) and the restoration head's
    (for a later run to continue with) atomically."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
             if not k.startswith(_HEAD)}
    stem = "encoder.stem.0.weight"
    state[stem] = state[stem][:, :model.in_channels].contiguous()
    state.update({_RESTORATION_HEAD + k: v.detach().to("cpu").contiguous() for k, v in head.state_dict().items()})
    data = save_safetensors(state, metadata={**_size_of(model), "steps": str(int(steps))})
    try:
        Path(models_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"Could not create the models folder {models_dir}: {exc.strerror or exc}.") from exc
    storage.atomic_write_bytes(pretrained_path(models_dir), data)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict] | None:
    """(tensors, metadata) of a saved pretraining; None (logged) when there is none or it is damaged."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("could not read %s: %s; starting from fresh weights", path, exc.strerror or exc)
        return None
    try:
        return load_safetensors(data), _header(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        log.warning("%s is not a readable pretraining (%s); starting from fresh weights", path.name, exc)
        return None


def load_pretrained(models_dir: str | Path, model: UNet) -> int:
    """Load a saved pretraining into ``model`` (a fresh U-Net of the same size; its segmentation head
    and any prompt inputs keep their initial weights). Returns the pretraining's steps; 0 when there
    is none or it does not fit (logged: training then starts from fresh weights)."""
    path = pretrained_path(models_dir)
    found = _read(path)
    if found is None:
        return 0
    state, meta = found
    wanted = _size_of(model)
    if any(meta.get(k) != v for k, v in wanted.items()):
        log.warning("%s is for another network (%s, not %s); starting from fresh weights", path.name,
                    {k: meta.get(k) for k in wanted}, wanted)
        return 0
    own = model.state_dict()
    stem = "encoder.stem.0.weight"
    try:
        for key, value in state.items():
            if key.startswith(_RESTORATION_HEAD):
                continue
            if key == stem:
                own[key][:, :value.shape[1]].copy_(value)
            else:
                own[key].copy_(value)
        steps = int(meta.get("steps") or 0)
    except (KeyError, RuntimeError, ValueError) as exc:
        log.warning("%s does not fit the network (%s); starting from fresh weights", path.name, exc)
        return 0
    model.load_state_dict(own)
    log.info("starting from %d steps of pretraining on the project's images", steps)
    return steps


def saved_steps(models_dir: str | Path) -> int | None:
    """The steps of the project's saved pretraining; None when there is none or it is damaged."""
    try:
        with safe_open(str(pretrained_path(models_dir)), framework="pt") as f:  # reads the header only
            return int((f.metadata() or {}).get("steps") or 0)
    except (OSError, ValueError, SafetensorError):
        return None


def _load_restoration_head(models_dir: str | Path, head: nn.Module) -> None:
    """The saved restoration head, so a pretraining continues where the last one stopped."""
    found = _read(pretrained_path(models_dir))
    if found is None:
        return
    head_state = {k[len(_RESTORATION_HEAD):]: v for k, v in found[0].items() if k.startswith(_RESTORATION_HEAD)}
    try:
        head.load_state_dict(head_state)
    except RuntimeError as exc:  # an older or damaged file: the head starts afresh
        log.info("restoration head not loaded: %s", exc)


def _header(data: bytes) -> dict:
    """The safetensors file's metadata (its JSON header's ``__metadata__``)."""
    if len(data) < 8:
        raise ValueError("the file is truncated")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise ValueError("the file is truncated")
    header = json.loads(data[8:8 + n])
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ValueError("its metadata is not a mapping")
    return meta


def pretrain(model: UNet, images: ProjectImages, models_dir: str | Path, steps_done: int, max_steps: int | None,
             device: torch.device, number_format: str, config, should_stop: Callable[[], bool],
             on_step: Callable[[int, float], None] | None = None) -> int:
    """Pretrain ``model`` until ``max_steps`` steps in all (None: until stopped) or should_stop();
    save every SAVE_EVERY steps and at the end. Returns the steps in all."""
    trainer = Pretrainer(model, images, device, number_format, config.crop_size, config.batch_size,
                         config.lr, config.weight_decay, config.seed + steps_done)
    if steps_done:
        _load_restoration_head(models_dir, trainer.head)
    steps = steps_done
    try:
        while (max_steps is None or steps < max_steps) and not should_stop():
            loss = trainer.step()
            steps += 1
            if on_step is not None:
                on_step(steps, loss)
            if (steps - steps_done) % SAVE_EVERY == 0:
                save_pretrained(models_dir, model, trainer.head, steps)
    finally:
        if steps > steps_done:
            save_pretrained(models_dir, model, trainer.head, steps)
    return steps
