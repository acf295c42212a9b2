"""A plain U-Net with GroupNorm, written to read like its diagram.

::

    input ─ stem ─────────────────────────────── up[3] ─ head ─ logits
              └ down[0] ─────────────────── up[2] ┘
                  └ down[1] ─────────── up[1] ┘
                      └ down[2] ─── up[0] ┘
                          └ down[3] ┘          (bottleneck; depth 4)

Each decoder block takes the row below (upsampled) and the skip connection on its left.
Widths double at each level: ``base_width * 2**level``. GroupNorm instead of BatchNorm so the model
trains at batch size 1 and behaves the same in train and eval mode.

A click-aware U-Net reads ``prompt_channels`` more input channels after the image's (click maps and
the previous mask: segdesk.core.clicks); all zero, they ask for the automatic proposal. A model
without them widens with ``with_prompts``: the new inputs start with zero weights, so it proposes
exactly as before until training teaches it to read clicks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ARCH_NAME = "unet"
# Bounds for sizes read from checkpoint metadata (the defaults are depth 4, base width 16).
MAX_DEPTH = 8
MAX_BASE_WIDTH = 256
MAX_BOTTLENECK_WIDTH = 2048
MAX_OUTPUTS = 64


def _groups(channels: int) -> int:
    """Largest group count <= 8 that divides ``channels`` (8 for the usual power-of-two widths)."""
    for g in range(min(8, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by GroupNorm and ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(out_channels), out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.GroupNorm(_groups(out_channels), out_channels),
            nn.ReLU(inplace=True),
        )


class Encoder(nn.Module):
    """A stem at full resolution, then ``depth`` stages that halve the size and widen."""

    def __init__(self, in_channels: int, widths: list[int]):
        super().__init__()
        self.stem = ConvBlock(in_channels, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), ConvBlock(c_in, c_out))
            for c_in, c_out in zip(widths[:-1], widths[1:])
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features from every level, finest first; the last one is the bottleneck."""
        features = [self.stem(x)]
        for stage in self.down:
            features.append(stage(features[-1]))
        return features


class DecoderBlock(nn.Module):
    """Upsample by 2, concatenate the skip connection, convolve."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvBlock(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(torch.cat([x, skip], dim=1))


class Decoder(nn.Module):
    def __init__(self, widths: list[int]):
        super().__init__()
        # from the bottleneck up: (in, skip, out) = (widths[i+1] or previous out, widths[i], widths[i])
        self.up = nn.ModuleList(
            DecoderBlock(widths[i + 1], widths[i], widths[i]) for i in reversed(range(len(widths) - 1))
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.up, reversed(features[:-1])):
            x = block(x, skip)
        return x


class UNet(nn.Module):
    """U-Net: encoder, decoder, 1x1 segmentation head giving ``n_outputs`` logits per pixel.

    Any input height and width works: the input is padded (reflect) to a multiple of
    ``2**depth`` and the output is cropped back to the input size.
    """

    def __init__(self, in_channels: int = 3, n_outputs: int = 2, depth: int = 4, base_width: int = 16,
                 prompt_channels: int = 0):
        super().__init__()
        if depth < 1 or base_width < 1 or in_channels < 1 or n_outputs < 1 or prompt_channels < 0:
            raise ValueError(
                f"UNet needs depth, base_width, in_channels and n_outputs >= 1 and prompt_channels >= 0, "
                f"got {depth}, {base_width}, {in_channels}, {n_outputs}, {prompt_channels}."
            )
        self.in_channels = in_channels  # the image's
        self.prompt_channels = prompt_channels  # click maps and previous mask (0: not click-aware)
        self.n_outputs = n_outputs
        self.depth = depth
        self.base_width = base_width
        self.widths = [base_width * 2**level for level in range(depth + 1)]

        self.encoder = Encoder(in_channels + prompt_channels, self.widths)
        self.decoder = Decoder(self.widths)
        self.head = nn.Conv2d(self.widths[0], n_outputs, kernel_size=1)

    def arch_dict(self) -> dict:
        return {
            "name": ARCH_NAME,
            "in_channels": self.in_channels,
            "n_outputs": self.n_outputs,
            "depth": self.depth,
            "base_width": self.base_width,
            "prompt_channels": self.prompt_channels,
        }

    @property
    def input_channels(self) -> int:
        """Channels ``forward`` reads: the image's, then the prompts'."""
        return self.in_channels + self.prompt_channels

    def with_prompts(self, prompt_channels: int) -> "UNet":
        """A copy that reads ``prompt_channels`` prompt channels (this model's weights; the new
        inputs' first-layer weights zero, so with empty prompts it computes exactly what this does)."""
        if prompt_channels == self.prompt_channels:
            return self
        wider = UNet(self.in_channels, self.n_outputs, self.depth, self.base_width, prompt_channels)
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        key = "encoder.stem.0.weight"
        old = state[key]
        keep = min(old.shape[1], wider.input_channels)
        new = old.new_zeros((old.shape[0], wider.input_channels) + tuple(old.shape[2:]))
        new[:, :keep] = old[:, :keep]
        state[key] = new
        wider.load_state_dict(state)
        return wider.to(old.device)

    @classmethod
    def from_arch(cls, arch: dict) -> "UNet":
        if arch.get("name") != ARCH_NAME:
            raise ValueError(f"Not a U-Net architecture: {arch!r}.")
        try:
            sizes = {k: int(arch[k]) for k in ("in_channels", "n_outputs", "depth", "base_width")}
            sizes["prompt_channels"] = int(arch.get("prompt_channels") or 0)  # older checkpoints: none
        except (TypeError, OverflowError) as exc:  # e.g. null or Infinity in the metadata
            raise ValueError(f"Unreadable U-Net size in {arch!r}: {exc}.") from exc
        # Checked before building: a damaged or hostile checkpoint's metadata must not make us
        # allocate a model of gigabytes (found by tests/test_reliability_model_files.py).
        if not (1 <= sizes["in_channels"] <= 4 and 1 <= sizes["n_outputs"] <= MAX_OUTPUTS
                and 1 <= sizes["depth"] <= MAX_DEPTH and 1 <= sizes["base_width"] <= MAX_BASE_WIDTH
                and sizes["base_width"] << sizes["depth"] <= MAX_BOTTLENECK_WIDTH
                and 0 <= sizes["prompt_channels"] <= 3 * MAX_OUTPUTS):
            raise ValueError(f"Implausible U-Net size {sizes}: the checkpoint is damaged or not from segdesk.")
        return cls(**sizes)

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"UNet expects a torch.Tensor, not {type(x).__name__}.")
        if x.ndim != 4:
            raise ValueError(
                f"UNet expects a 4D tensor N x C x H x W, got shape {tuple(x.shape)}; "
                "for one image use x.unsqueeze(0)."
            )
        if x.shape[1] != self.input_channels:
            prompts = f" and {self.prompt_channels} prompt channels" if self.prompt_channels else ""
            raise ValueError(
                f"UNet expects {self.in_channels} image channels{prompts}, got {x.shape[1]} (shape "
                f"{tuple(x.shape)}); convert images with segdesk.ml.normalise.to_model_input "
                "(gray is replicated to 3 channels) and put channels second."
            )
        if not x.is_floating_point():
            raise ValueError(f"UNet expects a floating point tensor, got {x.dtype}; use x.float().")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's output (N x base_width x H x W), what the 1 x 1 head turns into logits."""
        self._check_input(x)
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h = (-height) % multiple
        pad_w = (-width) % multiple
        if pad_h or pad_w:
            # reflect needs the pad to be smaller than the side; tiny inputs fall back to zeros
            mode = "reflect" if pad_h < height and pad_w < width else "constant"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self.decoder(self.encoder(x))[..., :height, :width]
