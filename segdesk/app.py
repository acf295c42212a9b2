"""Composition root: builds the application and main window, owns start-up and shut-down order."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def run_app(project: str | None = None, argv: list[str] | None = None) -> int:
    """Start the GUI, opening ``project`` (a folder) or the last project used."""
    from PySide6.QtWidgets import QApplication

    from segdesk.qt.main_window import MainWindow

    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName("segdesk")
    app.setOrganizationName("segdesk")
    window = MainWindow()
    window.show()
    target = project or window.settings.value("last_project", "")
    if target:
        window.open_project(target)
    code = app.exec()
    log.info("segdesk closed")
    return code
