"""Jinja filters that validate the questionnaire's answers.

Copier calls a question's ``validator`` template and treats any non-empty
output as the error message, so every filter returns ``""`` for a good answer
and a sentence saying what is accepted otherwise. Standard library only:
``copier copy`` must need nothing beyond ``copier-template-extensions``.
"""

from __future__ import annotations

import re
import unicodedata
import zoneinfo
from keyword import iskeyword

from jinja2 import Environment
from jinja2.ext import Extension

SLUG_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
PACKAGE_RE = re.compile(r"^[a-z_][a-z0-9_]*$")

# (name, lowest, highest, symbolic names) for the five cron fields.
CRON_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    (
        "month",
        1,
        12,
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
    ),
    ("day of week", 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
CRON_PART_RE = re.compile(r"^(\*|[0-9A-Za-z]+(?:-[0-9A-Za-z]+)?)(?:/([0-9]+))?$")


def slugify(text: str) -> str:
    """Turn a free-form project name into a lowercase-hyphen slug."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug or "project"


def slug_error(value: str) -> str:
    if SLUG_RE.match(str(value)):
        return ""
    return (
        f"{value!r} is not a valid slug: use lowercase letters, digits and single "
        "hyphens, starting with a letter (for example 'churn-mlops-workshop')"
    )


def package_name_error(value: str) -> str:
    value = str(value)
    if PACKAGE_RE.match(value) and not iskeyword(value):
        return ""
    return (
        f"{value!r} is not a valid Python package name: use lowercase letters, "
        "digits and underscores, not starting with a digit, and not a Python keyword"
    )


def email_error(value: str) -> str:
    if EMAIL_RE.match(str(value)):
        return ""
    return f"{value!r} is not an email address: expected something like 'name@example.org'"


def port_error(value: object, taken: dict | None = None) -> str:
    """Check a TCP port is unprivileged and differs from the ports in ``taken``."""
    try:
        port = int(value)
    except (TypeError, ValueError):
        return f"{value!r} is not a port number: expected an integer from 1024 to 65535"
    if not 1024 <= port <= 65535:
        return f"{port} is out of range: expected an integer from 1024 to 65535"
    for other_question, other_port in (taken or {}).items():
        if other_port is not None and str(other_port) != "" and int(other_port) == port:
            return f"{port} is already used by {other_question}: each service needs its own port"
    return ""


def _cron_value(token: str, lowest: int, highest: int, names: tuple[str, ...]) -> int | None:
    if token.isdigit():
        number = int(token)
        return number if lowest <= number <= highest else None
    upper = token.upper()
    if upper in names:
        return names.index(upper) + (1 if len(names) == 12 else 0)
    return None


def _cron_field_error(field: str, name: str, lowest: int, highest: int, names) -> str:
    for part in field.split(","):
        match = CRON_PART_RE.match(part)
        if not match:
            return f"the {name} field {field!r} is not valid cron syntax"
        base, step = match.groups()
        if step is not None and int(step) == 0:
            return f"the {name} field {field!r} has a step of 0"
        if base == "*":
            continue
        bounds = base.split("-")
        values = [_cron_value(token, lowest, highest, names) for token in bounds]
        if None in values:
            return f"the {name} field {field!r} must stay within {lowest}-{highest}"
        if len(values) == 2 and values[0] > values[1]:
            return f"the {name} field {field!r} has a range that runs backwards"
    return ""


def cron_error(value: str) -> str:
    """Validate a classic five-field cron expression (no seconds, no @macros)."""
    fields = str(value).split()
    if len(fields) != 5:
        return (
            f"{value!r} has {len(fields)} field(s): expected 5 "
            "(minute hour day-of-month month day-of-week), for example '*/2 * * * *'"
        )
    for field, spec in zip(fields, CRON_FIELDS, strict=True):
        if error := _cron_field_error(field, *spec):
            return f"{value!r}: {error}"
    return ""


def timezone_error(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(str(value))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return (
            f"{value!r} is not an IANA time zone: expected a name such as "
            "'UTC', 'Europe/Paris' or 'America/New_York'"
        )
    return ""


class ValidatorsExtension(Extension):
    """Register the validators and ``slugify`` as Jinja filters."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.filters.update(
            slugify=slugify,
            slug_error=slug_error,
            package_name_error=package_name_error,
            email_error=email_error,
            port_error=port_error,
            cron_error=cron_error,
            timezone_error=timezone_error,
        )
