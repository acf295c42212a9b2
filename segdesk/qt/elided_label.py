"""A one-line label that never cuts its text silently: "…" where it does not fit, the whole text
as its tooltip."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QSizePolicy


class ElidedLabel(QLabel):
    def __init__(self, text: str = "", tooltip: str = ""):
        """``tooltip``: what the field means, shown under the whole text when that is cut."""
        super().__init__()
        self._full = ""
        self._about = tooltip
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.set_full_text(text)

    def full_text(self) -> str:
        return self._full

    def set_full_text(self, text: str) -> None:
        self._full = text
        self._elide()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        shown = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, self.contentsRect().width())
        self.setText(shown)
        tips = [self._full] if shown != self._full else []
        self.setToolTip("\n\n".join(tips + ([self._about] if self._about else [])))
