"""Composition root: builds the application and main window, owns start-up and shut-down order."""

from __future__ import annotations

import gc
import logging
import sys

log = logging.getLogger(__name__)

GUI_SWITCH_INTERVAL_S = 0.001


def preload_engine() -> None:
    """Import torch, ONNX Runtime and the proposal code before the window serves the user.

    Importing torch loads large shared libraries while holding Python's GIL; done later, on a worker
    thread, it would freeze the GUI for hundreds of milliseconds in the middle of someone's work.
    Nothing is computed with torch here. Training, and with it torchvision and the ONNX exporter,
    runs in its own process (segdesk.ml.train_process): the window imports neither, which keeps
    about 0.19 GB out of its resident memory.
    """
    import segdesk.ml.inference  # noqa: F401

    try:
        import onnxruntime  # noqa: F401
    except ImportError:  # a broken install: checkpoints are used through torch (onnx_engine.py logs it)
        pass

    # The GUI thread waits for the GIL while a worker runs Python code (data loading, validation);
    # a 1 ms switch interval instead of 5 ms bounds each such wait to what a frame can afford.
    sys.setswitchinterval(GUI_SWITCH_INTERVAL_S)


def freeze_startup_objects() -> None:
    """Keep Python's full garbage collections short: call once the window is up.

    A full collection walks every tracked object, ~0.4 M once torch, Qt and pyqtgraph are loaded:
    100-300 ms holding the GIL, in whichever thread allocates at that moment, so now and then the
    window froze that long while a worker loaded a model. The objects alive at start-up live as
    long as the app; ``gc.freeze`` takes them out of the collector's walk.
    """
    gc.collect()
    gc.freeze()


def binding_problem() -> str | None:
    """A known-bad Qt binding for this Python: PySide6 6.12.0 on Python < 3.12 drops references to
    None and True on every call, and a long session aborts (found by the soak, docs/reliability.md)."""
    import PySide6

    if PySide6.__version__ == "6.12.0" and sys.version_info < (3, 12):
        return ("PySide6 6.12.0 is installed; on this Python it crashes long sessions. "
                "Run: pip install 'PySide6-Essentials!=6.12.0'")
    return None


def check_display() -> None:
    """Raise SegdeskError with the fix when Qt could not open a window here; call it before the
    QApplication exists, since Qt aborts the process when its platform plugin cannot load."""
    from segdesk.core.errors import SegdeskError
    from segdesk.display_check import display_problem

    if (problem := display_problem()) is not None:
        raise SegdeskError(problem)


def run_app(project: str | None = None, argv: list[str] | None = None) -> int:
    """Start the GUI, opening ``project`` (a folder) or the last project used."""
    check_display()
    from PySide6.QtWidgets import QApplication, QMessageBox

    from segdesk.qt.actions import icon
    from segdesk.qt.main_window import MainWindow

    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName("segdesk")
    app.setOrganizationName("segdesk")
    app.setWindowIcon(icon("segdesk"))
    app.setDesktopFileName("segdesk")  # pairs the window with resources/segdesk.desktop (Wayland app id)
    preload_engine()
    window = MainWindow()
    window.show()
    if (problem := binding_problem()) is not None:
        log.error("%s", problem)
        QMessageBox.warning(window, "Update needed", problem)
    target = project or window.settings.value("last_project", "")
    if target:
        window.open_project(target)
    freeze_startup_objects()
    code = app.exec()
    from segdesk.qt.worker_thread import wait_for_stragglers

    wait_for_stragglers()  # no worker thread outlives the window, even one that missed its time-out
    log.info("segdesk closed")
    return code
