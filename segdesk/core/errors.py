"""Typed errors. Each carries a message a user can act on; the GUI shows str(error) as it is."""


class SegdeskError(Exception):
    """Base of every error segdesk raises on purpose."""


class StorageError(SegdeskError):
    """A file could not be written or read back (read-only folder, full disk, missing folder)."""


class ImageReadError(SegdeskError):
    """An image file is unreadable: corrupt, truncated, unknown format or too large."""


class ProjectError(SegdeskError):
    """A project folder or project.json is missing, invalid or of an unknown schema."""


class LabelError(SegdeskError):
    """A label file is unreadable or does not match its image (wrong size, bad values)."""


class CheckpointError(SegdeskError):
    """A model checkpoint is missing, corrupt, unsafe or does not fit the project."""


class Cancelled(Exception):
    """Work given up on purpose because more urgent work came (a prefetch proposal stopped so that
    a click is answered first); not an error, never shown."""
