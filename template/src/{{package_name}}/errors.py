"""The failures a user can fix, kept free of heavy imports.

The CLI catches ``WorkshopError`` and prints its message on one line, so it can
do that without importing MLflow or pandas first.
"""


class WorkshopError(Exception):
    """A known failure whose message says what to do."""


class InputFileNotFoundError(WorkshopError, FileNotFoundError):
    """A file the user points at (a data set, a CSV to score) does not exist."""
