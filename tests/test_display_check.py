"""Start-up on a machine where Qt cannot open a window: one clear message with the fix, exit 1,
never Qt's abort (exit 134)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from segdesk import cli, display_check

LDD_MISSING = """\
\tlinux-vdso.so.1 (0x00007ffc)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f4f)
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxkbcommon-x11.so.0 => /lib/x86_64-linux-gnu/libxkbcommon-x11.so.0 (0x00007f4f)
\tlibxcb-icccm.so.4 => not found
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the xcb check is Linux only")


@pytest.fixture
def x_display(monkeypatch):
    """A display that would be used through the xcb plugin (a remote one: no local socket check)."""
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", "localhost:10.0")


def test_missing_xcb_libraries_are_named_with_install_commands_and_exit_1(x_display, monkeypatch, capsys):
    asked = []

    def fake_ldd(path):
        asked.append(path)
        return LDD_MISSING

    monkeypatch.setattr(display_check, "run_ldd", fake_ldd)
    assert cli.main(["open"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert asked and asked[0].name == "libqxcb.so"  # the plugin itself was asked
    assert "libxcb-cursor.so.0, libxcb-icccm.so.4, libxcb-keysyms.so.1 are missing" in err
    assert "sudo apt install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in err
    assert "sudo dnf install 'libxcb-cursor.so.0()(64bit)'" in err
    # the demo command checks too, before it creates anything
    assert cli.main(["demo"]) == 1
    assert "libxcb-icccm4" in capsys.readouterr().err


def test_complete_xcb_plugin_passes(x_display, monkeypatch):
    monkeypatch.setattr(display_check, "run_ldd", lambda path: LDD_MISSING.replace("not found", "/lib/x.so (0x1)"))
    assert display_check.display_problem() is None


def test_debian_package_names_follow_the_soname():
    assert display_check.debian_package("libxcb-icccm.so.4") == "libxcb-icccm4"
    assert display_check.debian_package("libxkbcommon-x11.so.0") == "libxkbcommon-x11-0"
    assert display_check.debian_package("libEGL.so.1") == "libegl1"


def test_offscreen_and_wayland_skip_the_xcb_check(monkeypatch):
    monkeypatch.setattr(display_check, "run_ldd", lambda path: LDD_MISSING)
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert display_check.display_problem() is None
    monkeypatch.delenv("QT_QPA_PLATFORM")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert display_check.display_problem() is None


def test_no_display_says_so_and_points_to_offscreen_in_a_real_process(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    done = subprocess.run([sys.executable, "-m", "segdesk", "open"], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "no display found" in done.stderr and "QT_QPA_PLATFORM=offscreen" in done.stderr
    assert "Traceback" not in done.stderr


def test_local_display_without_x_server(monkeypatch):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setenv("DISPLAY", ":4321")
    assert "no X server is running on DISPLAY=:4321" in display_check.display_problem()
