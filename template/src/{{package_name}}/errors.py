"""The failures a user can fix, kept free of heavy imports.

Command-line entry points run through ``report_known_failures``, which prints
a ``WorkshopError`` on one line, so they can do that without importing MLflow
or pandas first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from .messages import text


class WorkshopError(Exception):
    """A known failure whose message says what to do."""


class InputFileNotFoundError(WorkshopError, FileNotFoundError):
    """A file the user points at (a data set, a CSV to score) does not exist."""


def report_known_failures(command: Callable[[], int | None]) -> int:
    """Run ``command`` and return an exit code: its own (0 if it returns None), or 1
    after a known failure.

    A known failure ends with one line on stderr that says what to do; a
    traceback would bury that sentence. Anything else is a bug and keeps its traceback.
    """
    try:
        return command() or 0
    except WorkshopError as error:
        print(text("errors.line", error=error), file=sys.stderr)
        return 1


def one_line_for_known_failures() -> None:
    """Print a known failure raised outside ``report_known_failures`` on one line too.

    A script whose definitions read .env while they load (Dagster's schedules) fails
    before its entry point runs; this hook keeps that sentence out of a traceback.
    """
    previous = sys.excepthook

    def hook(kind, error, traceback) -> None:
        if isinstance(error, WorkshopError):
            print(text("errors.line", error=error), file=sys.stderr)
        else:
            previous(kind, error, traceback)

    sys.excepthook = hook
