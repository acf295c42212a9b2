"""Can Qt open a window here? Asked before Qt loads its platform plugin, because a plugin that
cannot load aborts the whole process (exit 134, "Could not load the Qt platform plugin") with a
message that names only one of the missing libraries.

On Linux the xcb plugin itself is asked which system libraries it lacks (``ldd`` on
``libqxcb.so``), so no list of Qt's dependencies is kept here by hand; the install commands are
derived from the library names (Debian's package naming rule for apt; dnf installs by soname).
No Qt is imported here.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

HEADLESS_HINT = ("for headless use, run the commands (segdesk --help) or set "
                 "QT_QPA_PLATFORM=offscreen")

_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found\s*$", re.MULTILINE)
_SONAME = re.compile(r"^(?P<base>lib.+?)\.so\.(?P<version>[0-9]+)")


def xcb_plugin() -> Path | None:
    """The xcb platform plugin of the installed PySide6, found without importing it."""
    spec = importlib.util.find_spec("PySide6")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        plugin = Path(folder) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
        if plugin.is_file():
            return plugin
    return None


def run_ldd(path: Path) -> str:
    """``ldd``'s report on ``path``: every shared library it needs, directly or not."""
    done = subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout


def missing_libraries(ldd_output: str) -> list[str]:
    """Sonames that ``ldd`` reported as not found, each once, in its order."""
    return list(dict.fromkeys(_NOT_FOUND.findall(ldd_output)))


def debian_package(soname: str) -> str:
    """Debian's package name for a shared library (policy 8.1: soname base + version, with a hyphen
    when the base ends in a digit), e.g. libxcb-icccm.so.4 -> libxcb-icccm4."""
    m = _SONAME.match(soname)
    if m is None:
        return soname
    base, version = m["base"], m["version"]
    return f"{base}{'-' if base[-1].isdigit() else ''}{version}".lower()


def install_advice(sonames: list[str]) -> str:
    apt = " ".join(debian_package(s) for s in sonames)
    dnf = " ".join(f"'{s}()(64bit)'" for s in sonames)
    return f"Debian/Ubuntu: sudo apt install {apt}; Fedora: sudo dnf install {dnf}"


def _platform_requested() -> str | None:
    """The platform Qt will try first: QT_QPA_PLATFORM's first entry, else None (Qt's default)."""
    value = os.environ.get("QT_QPA_PLATFORM", "").strip()
    return value.split(";")[0].split(":")[0].strip() or None


def _local_x_server_missing(display: str) -> bool:
    """True when DISPLAY names a local X server (":0", "unix:1.0") whose socket does not exist."""
    m = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", display)
    return m is not None and not Path(f"/tmp/.X11-unix/X{m[1]}").exists()


def display_problem(ldd: Callable[[Path], str] | None = None, plugin: Path | None = None) -> str | None:
    """Why Qt could not open a window here, as one message with its fix; None when it can (or when
    this cannot be told, e.g. no ``ldd``, where Qt itself gets to try)."""
    if not sys.platform.startswith("linux"):
        return None  # macOS and Windows wheels carry everything their platform plugin needs
    platform = _platform_requested()
    if platform not in (None, "xcb"):
        return None  # offscreen, wayland, vnc, ...: the user chose; the xcb libraries do not matter
    display = os.environ.get("DISPLAY", "")
    if platform is None and not display:
        if os.environ.get("WAYLAND_DISPLAY"):
            return None  # Qt uses its Wayland plugin
        return f"no display found: run segdesk in a desktop session, or set DISPLAY (e.g. under xvfb-run); {HEADLESS_HINT}"
    if not display:
        return f"QT_QPA_PLATFORM is xcb but DISPLAY is not set; {HEADLESS_HINT}"
    if _local_x_server_missing(display):
        return f"no X server is running on DISPLAY={display}; {HEADLESS_HINT}"
    plugin = plugin or xcb_plugin()
    if plugin is None or shutil.which("ldd") is None:
        return None
    try:
        missing = missing_libraries((ldd or run_ldd)(plugin))
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("could not check the xcb plugin's libraries: %s", exc)
        return None
    if not missing:
        return None
    return (f"Qt's xcb platform plugin cannot load: the system libraries {', '.join(missing)} are "
            f"missing. Install them ({install_advice(missing)}) and start segdesk again")
