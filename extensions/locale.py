"""The class's language at render time: the texts that sit inside rendered files.

Sentences a program prints live in the project's ``messages.toml`` (one per
language, rendered by file name). The few that must sit inside a file the student
edits (an exercise's TODOs and hints) live here, in ``locales/<language>.toml``:
one catalog per language, read into the ``locale`` variable, so that a template
writes ``{{ locale.prefect_exercises.step2 | as_comment }}`` and never switches on
the language itself. Standard library only, as for the validators.
"""

from __future__ import annotations

import functools
import textwrap
import tomllib
from pathlib import Path

from copier_template_extensions import ContextHook
from jinja2 import Environment
from jinja2.ext import Extension

LOCALES = Path(__file__).resolve().parent.parent / "locales"
LINE_LENGTH = 100  # the generated project's ruff line length


@functools.cache
def load_locale(language: str) -> dict:
    """Read once per language: copier builds a context, and runs this hook, per path."""
    return tomllib.loads((LOCALES / f"{language}.toml").read_text("utf-8"))


def as_comment(paragraphs: str, indent: int = 0, **values: str) -> str:
    """Python comment lines, wrapped to the project's line length, paragraphs kept.

    A paragraph whose lines start with spaces is code: it is kept as it is written.
    ``{name}`` placeholders take ``values`` (the package's name, for imports).
    """
    for name, value in values.items():
        paragraphs = paragraphs.replace("{" + name + "}", value)
    prefix = " " * indent + "# "
    blocks = []
    for paragraph in paragraphs.strip("\n").split("\n\n"):
        if paragraph.startswith(" "):
            blocks.append("\n".join(prefix + line for line in paragraph.split("\n")))
        else:
            blocks.append(
                textwrap.fill(
                    " ".join(paragraph.split()),
                    width=LINE_LENGTH,
                    initial_indent=prefix,
                    subsequent_indent=prefix,
                    break_on_hyphens=False,
                )
            )
    return f"\n{prefix.rstrip()}\n".join(blocks)


class LocaleContext(ContextHook):
    """Add ``locale``: the render-time catalog of the answered ``docs_language``."""

    def hook(self, context: dict) -> None:
        context["locale"] = load_locale(context.get("docs_language") or "en")


class LocaleFilters(Extension):
    """Register ``as_comment`` for the catalog's texts."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["as_comment"] = as_comment
