"""Third-party libraries' chatter kept off the user's terminal (called once where a program starts:
the command line, which also starts the app, and the training process)."""

from __future__ import annotations

import logging
import warnings


def quiet_pydicom() -> None:
    """pydicom warns about files it reads anyway ("Expected explicit VR, but found implicit VR"), both
    as a Python warning, printed with a path into its own source, and through its logger: noise to a
    clinician. segdesk's readers say what matters (a clear error, or nothing when the file reads).
    Its errors still show. Imports nothing heavy (not pydicom), so start-up stays fast."""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
    logger = logging.getLogger("pydicom")
    if _below_error not in logger.filters:  # a filter, since importing pydicom sets its logger's level
        logger.addFilter(_below_error)


def _below_error(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR
