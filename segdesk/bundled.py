"""Where segdesk's bundled files are: the repository's ``resources/`` folder, installed as the package
``segdesk.resources`` (pyproject.toml), so a wheel and an editable install find it the same way."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from segdesk.core.errors import SegdeskError


def resource_path(*parts: str) -> Path:
    """The bundled file or folder ``resources/<parts...>``; SegdeskError when it is not installed."""
    missing = SegdeskError(f"segdesk's bundled resources/{'/'.join(parts)} is missing; reinstall segdesk "
                           "(from a checkout: pip install -e .).")
    try:
        path = files("segdesk.resources").joinpath(*parts)
    except ModuleNotFoundError as exc:
        raise missing from exc
    if not isinstance(path, Path) or not path.exists():  # not a Path: a zipped install, unsupported
        raise missing
    return path
