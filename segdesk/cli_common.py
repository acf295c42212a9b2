"""What every ``segdesk`` command shares: program name, exit statuses, the logger, error helpers."""

from __future__ import annotations

import logging
import sys

from segdesk.core.errors import SegdeskError

log = logging.getLogger("segdesk.cli")  # one logger name for all commands, as shown by ``-v``

PROG = "segdesk"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _fail(message: str) -> SegdeskError:
    return SegdeskError(message)


def _err(line: str) -> None:
    print(line, file=sys.stderr)
