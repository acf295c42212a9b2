"""Prompts for project folders, classes and image files. They only ask; the window acts."""

from __future__ import annotations

from PySide6.QtWidgets import QFileDialog, QInputDialog, QWidget

from segdesk.core import imageio

IMAGE_FILTER = "Images (" + " ".join(f"*{s}" for s in sorted(imageio.SUPPORTED_SUFFIXES)) + ");;All files (*)"


def ask_new_project(parent: QWidget) -> tuple[str, list[str]] | None:
    folder = QFileDialog.getExistingDirectory(parent, "Choose an empty folder for the new project")
    if not folder:
        return None
    names, ok = QInputDialog.getText(parent, "Classes", "Classes to label, separated by commas:", text="lesion")
    if not ok:
        return None
    return folder, [n.strip() for n in names.split(",") if n.strip()]


def ask_project_folder(parent: QWidget, start: str = "") -> str | None:
    return QFileDialog.getExistingDirectory(parent, "Open a segdesk project folder", start) or None


def ask_image_files(parent: QWidget) -> list[str]:
    files, _ = QFileDialog.getOpenFileNames(parent, "Add images", "", IMAGE_FILTER)
    return files


def ask_image_folder(parent: QWidget) -> list[str]:
    folder = QFileDialog.getExistingDirectory(parent, "Add every image in a folder")
    return [folder] if folder else []
