"""What the project prints for a student, in the class's language.

The sentences live in ``messages.toml`` beside this module, one catalog per language
(the template renders the one the class asked for), so the code stays the same in
every language: ``text("exercises.some_failed", failures=2)`` looks a sentence up by its key
and fills in its ``{placeholders}``.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.resources import files


@cache
def catalog() -> dict:
    return tomllib.loads(files(__package__).joinpath("messages.toml").read_text("utf-8"))


def text(key: str, **values: object) -> str:
    """The sentence at ``key`` (dotted, as in ``exercises.step2.title``), filled in."""
    entry: object = catalog()
    for part in key.split("."):
        entry = entry[part]  # a missing key is a bug of the catalog: let it raise
    if not isinstance(entry, str):
        raise KeyError(f"{key!r} is a section of messages.toml, not a sentence")
    return entry.format(**values)
