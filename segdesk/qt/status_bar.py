"""The permanent fields of the status bar: pixel under the cursor, proposal, zoom, device, saving."""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QLabel, QStatusBar


class StatusFields:
    def __init__(self, bar: QStatusBar):
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
        self.device.setText(f"device: {name}")

    def show_pixel(self, x: float, y: float, pixels: np.ndarray, label: np.ndarray, names: list[str]) -> None:
        """Coordinates, original value(s) and label under the cursor; blank outside the image."""
        ix, iy = int(np.floor(x)), int(np.floor(y))
        h, w = label.shape
        if not (0 <= ix < w and 0 <= iy < h):
            self.position.setText("")
            return
        value = ", ".join(str(v) for v in np.atleast_1d(pixels[iy, ix]))
        self.position.setText(f"x {ix}  y {iy}   value {value}   label: {names[int(label[iy, ix])]}")
