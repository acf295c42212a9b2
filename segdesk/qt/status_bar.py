"""The status bar: the current message, then the permanent fields: pixel under the cursor, proposal,
zoom, device, saving."""

from __future__ import annotations

import re

import numpy as np
from PySide6.QtWidgets import QLabel, QStatusBar

from segdesk.qt.elided_label import ElidedLabel


class MessageLabel(ElidedLabel):
    """Shows the bar's message, elided with "…" when it does not fit, the whole text as tooltip.

    QStatusBar draws a message itself, clipped without a sign at the first permanent field. This
    label, the first permanent field, takes the room the message had and leaves the bar's own
    drawing none; ``showMessage``, its timeout and ``currentMessage`` work as before.
    """

    def __init__(self, bar: QStatusBar):
        super().__init__()
        bar.insertPermanentWidget(0, self, 1)
        bar.messageChanged.connect(self.set_message)

    def set_message(self, text: str) -> None:
        self.set_full_text(text)


class StatusFields:
    def __init__(self, bar: QStatusBar):
        self.message = MessageLabel(bar)
        self.position = QLabel()
        self.proposal = QLabel()
        self.zoom = QLabel()
        self.device = QLabel("device: …")
        self.save = QLabel()
        for label in (self.position, self.proposal, self.zoom, self.device, self.save):
            bar.addPermanentWidget(label)

    def show_zoom(self, zoom: float) -> None:
        self.zoom.setText(f"{zoom * 100:.0f}%")

    def show_device(self, name: str) -> None:
        self.device.setText(f"device: {_singular_thread(name)}")

    def show_pixel(self, x: float, y: float, pixels: np.ndarray, label: np.ndarray, names: list[str]) -> None:
        """Coordinates, original value(s) and label under the cursor; blank outside the image."""
        ix, iy = int(np.floor(x)), int(np.floor(y))
        h, w = label.shape
        if not (0 <= ix < w and 0 <= iy < h):
            self.position.setText("")
            return
        value = ", ".join(str(v) for v in np.atleast_1d(pixels[iy, ix]))
        self.position.setText(f"x {ix}  y {iy}   value {value}   label: {names[int(label[iy, ix])]}")


def _singular_thread(device_name: str) -> str:
    """ml.device names a one-thread CPU "CPU (1 threads)" (and checkpoints store it so): say "1 thread"."""
    return re.sub(r"\b1 threads\b", "1 thread", device_name)
