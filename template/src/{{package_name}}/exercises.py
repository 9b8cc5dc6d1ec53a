"""What every exercise file shares, whatever the orchestrator.

An exercise is a script the student edits (``pipelines/workshop/<orchestrator>/``)
and a ``check`` that asks the servers what that script did. This module holds the
pieces that do not depend on the orchestrator: the customer database the
exercises read from, the names each exercise file gets, and the report a check
prints, one line per point.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .config import Settings
from .messages import text
from .pipeline import load_validated_data

# A database that is waking up refuses the first reads of a process: a pipeline without
# retries fails, one with two retries or more gets its data on a later attempt.
COLD_START_FAILURES = 2


class CustomerDatabase:
    """The customers, behind a database that is slow to wake up and can go down.

    Deterministic on purpose: the first ``COLD_START_FAILURES`` reads of a process
    fail, so a check can tell a pipeline that retries from one that was lucky.
    """

    def __init__(self) -> None:
        self.failures_left = COLD_START_FAILURES
        self.down = False

    def awake(self) -> None:
        """No cold start: step 1 reads the data before retries are taught."""
        self.failures_left = 0

    def read(self, settings: Settings) -> pd.DataFrame:
        if self.down:
            raise ConnectionError(text("exercises.database.down"))
        if self.failures_left > 0:
            self.failures_left -= 1
            raise ConnectionError(text("exercises.database.waking_up"))
        return load_validated_data(settings)


CUSTOMER_DATABASE = CustomerDatabase()


@dataclass(frozen=True)
class Candidate:
    """A trained model and its scores; ``model_uri`` once it is logged to MLflow (step 4)."""

    name: str
    metrics: dict[str, float]
    model_uri: str | None = None


@dataclass(frozen=True)
class ExerciseFile:
    """The names an exercise file's runs, deployments and models get on the servers.

    Derived from the file's name, so the students' file and the teacher's solution
    never read each other's runs.
    """

    path: Path
    root: Path

    @property
    def relative_path(self) -> str:
        return self.path.resolve().relative_to(self.root.resolve()).as_posix()

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.path.stem.lower()).strip("-")

    @property
    def python_name(self) -> str:
        """The slug as a Python name (Dagster's asset key prefixes)."""
        return self.slug.replace("-", "_")

    @property
    def tag(self) -> str:
        """The tag every run started by the exercise's commands carries."""
        return f"exercise:{self.slug}"

    def entrypoint(self, function: str) -> str:
        """How a worker finds ``function`` of this file, from the project root."""
        return f"{self.relative_path}:{function}"


def exercise_experiment(settings: Settings) -> str:
    """The exercises log beside the workshop's runs, never into them."""
    return f"{settings.experiment_name}-exercises"


def exercise_model(settings: Settings) -> str:
    """The exercises' registered model: their champion is not the workshop's."""
    return f"{settings.model_name}-exercises"


@dataclass
class CheckReport:
    """The lines a check prints: ✓ for a point done, ✗ and what to do for the others."""

    title: str
    lines: list[str] = field(default_factory=list)
    failures: int = 0

    def point(self, passed: bool, done: str, to_do: str) -> bool:
        if passed:
            self.lines.append(f"  ✓ {done}")
        else:
            self.failures += 1
            self.lines.append(f"  ✗ {to_do}")
        return passed

    def print(self) -> int:
        """Print the report; the exit code is 0 only when every point passed."""
        print(self.title)
        print("\n".join(self.lines))
        verdict = "exercises.all_passed" if not self.failures else "exercises.some_failed"
        print(text(verdict, failures=self.failures), flush=True)
        return 1 if self.failures else 0


def step_number(argument: str, steps: range) -> int | None:
    """``step3`` -> 3, or None when the argument names no step of the exercise."""
    match = re.fullmatch(r"step(\d+)", argument)
    if match and int(match.group(1)) in steps:
        return int(match.group(1))
    return None


def exit_with_usage(usage: str, wrong: str | None = None) -> int:
    """Print the usage (after what was wrong, if anything); 2 for a wrong argument."""
    if wrong is None:
        print(usage)
        return 0
    print(f"{wrong}\n{usage}", file=sys.stderr)
    return 2
