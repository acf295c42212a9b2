"""The image being labelled in the window: its pixels, display window, label document and timer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from segdesk.core.image import Image
from segdesk.core.label_document import LabelDocument


@dataclass
class OpenImage:
    image_id: str
    image: Image
    doc: LabelDocument
    window: tuple[float, float] | None  # display window for images with more than 8 bits
    opened_at: float = field(default_factory=time.monotonic)
    proposal: np.ndarray | None = None  # label encoding (1 = background); shown under the label
    proposal_checkpoint: str | None = None
    proposal_learning: bool = False  # from a model still learning, shown on request ("show anyway")
    newest_request: int = 0  # answers to older proposal requests for this image are stale

    def seconds_open(self) -> float:
        return time.monotonic() - self.opened_at

    def asked(self, request_id: int) -> int:
        """A proposal was asked for with ``request_id`` (0: none was); returns it."""
        self.newest_request = max(self.newest_request, request_id)
        return request_id
