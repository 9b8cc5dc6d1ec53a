"""The class's language at render time: the texts that sit inside rendered files.

Sentences a program prints live in the project's ``messages.toml`` (one per
language, rendered by file name). Those that sit inside a file the student reads or
edits (the scripts' docstrings and comments, an exercise's TODOs and hints, what
``make help`` lists, the comments of the Makefile, .env.example and Docker files) live
here, in ``locales/<language>.toml``: one catalog per language, read into the ``locale``
variable, so that a template writes ``{{ locale.prefect_exercises.step2 | as_comment }}``
and never switches on the language itself; the code around them is written once.
Standard library only, as for the validators.
"""

from __future__ import annotations

import functools
import re
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


LIST_ITEM = re.compile(r"(?:\d+\.|-) ")  # "1. " or "- " opens a list item
CODE_SPAN = re.compile(r"(`+)[^`]+?\1")  # `make dev`, ``{package}``: never cut in two
# Spaces no line starts or ends at: before French high punctuation ("run : il"), inside
# « », between a figure and its unit ("30 s", "50 %").
NO_BREAK = re.compile(r" (?=[:;!?»])|(?<=«) |(?<=\d) (?=%|s\b)")
KEEP_TOGETHER = "\0"  # stands for those spaces while a paragraph is wrapped


def wrapped_lines(
    paragraphs: str, prefix: str, blank: str, first: str | None = None, width: int = LINE_LENGTH
) -> list[str]:
    """The catalog's paragraphs as lines of ``prefix`` and text, at most ``width`` long.

    Paragraphs are separated by a ``blank`` line. One whose lines start with spaces is
    code: kept as it is written. One that starts with "1. " or "- " is a list: each item
    wrapped on its own, its next lines indented under its text. Any other is prose, wrapped
    between words, never inside a `code span` nor before French punctuation (NO_BREAK).
    ``first`` replaces the prefix of the very first line (a docstring's opening quotes).
    """
    lines: list[str] = []
    for paragraph in paragraphs.strip("\n").split("\n\n"):
        if lines:
            lines.append(blank)
        if paragraph.startswith(" "):
            lines += [prefix + line for line in paragraph.split("\n")]
            continue
        items = [paragraph]
        if LIST_ITEM.match(paragraph):
            items = re.split(rf"\n(?={LIST_ITEM.pattern})", paragraph)
        for item in items:
            marker = LIST_ITEM.match(item)
            hanging = " " * len(marker.group()) if marker else ""
            kept = " ".join(item.split())
            kept = CODE_SPAN.sub(lambda span: span.group().replace(" ", KEEP_TOGETHER), kept)
            kept = NO_BREAK.sub(KEEP_TOGETHER, kept)
            text = textwrap.wrap(
                kept,
                width=width,
                initial_indent=first if first is not None and not lines else prefix,
                subsequent_indent=prefix + hanging,
                break_on_hyphens=False,
            )
            lines += [line.replace(KEEP_TOGETHER, " ") for line in text]
    return lines


def fill_values(text: str, values: dict[str, str]) -> str:
    """``{name}`` placeholders replaced by ``values`` (the package's name, for imports)."""
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def as_comment(paragraphs: str, indent: int = 0, width: int = LINE_LENGTH, **values: str) -> str:
    """Comment lines, wrapped to the project's line length, paragraphs kept.

    A paragraph whose lines start with spaces is code: it is kept as it is written; a
    paragraph that starts with "1. " or "- " is a list, its items wrapped one by one.
    ``{name}`` placeholders take ``values`` (the package's name, for imports). Python,
    Makefiles, .env files, Dockerfiles and YAML all comment with "# ": ``width`` sets the
    line length of a file that ruff does not format (it keeps that file's look).
    """
    prefix = " " * indent + "# "
    text = fill_values(paragraphs, values)
    return "\n".join(wrapped_lines(text, prefix, prefix.rstrip(), width=width))


def as_docstring(paragraphs: str, indent: int = 0, **values: str) -> str:
    """A whole docstring, quotes included, wrapped as ``as_comment`` wraps comments.

    Its first line is indented by ``indent`` like the rest (write the filter's output at
    the start of the template's line). A docstring that fits on one line with both its
    quotes stays on one line; a longer one ends with its closing quotes on a line of their
    own. Its lines leave room for those quotes: ruff format would put them back at the end
    of a single line, past the line length.
    """
    pad = " " * indent
    text = fill_values(paragraphs, values)
    lines = wrapped_lines(text, pad, "", first=pad + '"""', width=LINE_LENGTH - 3)
    if len(lines) == 1:
        return lines[0] + '"""'
    return "\n".join([*lines, pad + '"""'])


def as_heading(title: str, indent: int = 0, width: int = LINE_LENGTH) -> str:
    """A section's heading comment, ``# --- title ---...``, ruled to the line length
    (or to ``width``, as ``as_comment`` takes it).

    A title too long for the line fails the render: shorten it in the catalog.
    """
    heading = f"{' ' * indent}# --- {title} "
    if len(heading) + 3 > width:
        raise ValueError(f"heading too long for a {width}-character line: {heading!r}")
    return heading.ljust(width, "-")


class LocaleContext(ContextHook):
    """Add ``locale``: the render-time catalog of the answered ``docs_language``."""

    def hook(self, context: dict) -> None:
        context["locale"] = load_locale(context.get("docs_language") or "en")


class LocaleFilters(Extension):
    """Register the filters that lay the catalog's texts out as comments and docstrings."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters["as_comment"] = as_comment
        environment.filters["as_docstring"] = as_docstring
        environment.filters["as_heading"] = as_heading
