"""The failures a user can fix, kept free of heavy imports.

The CLI catches ``WorkshopError`` and prints its message on one line, so it can
do that without importing MLflow or pandas first.
"""


class WorkshopError(Exception):
    """A known failure whose message says what to do."""
