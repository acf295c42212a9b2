"""What every ``segdesk`` command shares: program name, exit statuses, the logger, error helpers."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from segdesk.core.errors import SegdeskError
from segdesk.core.project import Project

log = logging.getLogger("segdesk.cli")  # one logger name for all commands, as shown by ``-v``

PROG = "segdesk"
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def fail(message: str) -> SegdeskError:
    """The error that ends a command with one line ``segdesk: error: <message>`` (exit status 1)."""
    return SegdeskError(message)


def print_err(line: str) -> None:
    """One line on stderr: progress, notes, skipped files."""
    print(line, file=sys.stderr)


def open_project(path: str | os.PathLike, clean: bool = True) -> Project:
    """Project.open, except that a path that does not exist says so (not "is not a project")."""
    if not Path(path).expanduser().exists():
        raise fail(f"{path} does not exist")
    return Project.open(path, clean=clean)
