"""Bad answers are refused with the question's name and leave nothing behind."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helpers import TEMPLATE_ROOT, render

sys.path.insert(0, str(TEMPLATE_ROOT / "extensions"))
import validators  # noqa: E402  (the template's extension module, stdlib only)

BAD_ANSWERS = [
    ({"schedule_cron": "*/2 * * *"}, "schedule_cron", "expected 5"),
    ({"schedule_cron": "61 * * * *"}, "schedule_cron", "minute"),
    ({"schedule_cron": "* * * 13 *"}, "schedule_cron", "month"),
    ({"schedule_timezone": "Mars/Olympus_Mons"}, "schedule_timezone", "IANA"),
    ({"mlflow_port": 80}, "mlflow_port", "1024 to 65535"),
    ({"mlflow_port": 70000}, "mlflow_port", "1024 to 65535"),
    ({"mlflow_port": 5000, "prefect_port": 5000}, "prefect_port", "mlflow_port"),
    ({"prefect_port": 4200, "dagster_port": 4200}, "dagster_port", "prefect_port"),
    ({"project_slug": "my project"}, "project_slug", "lowercase"),
    ({"package_name": "class"}, "package_name", "keyword"),
    ({"package_name": "9lives"}, "package_name", "not starting with a digit"),
    ({"author_email": "teacher-at-school"}, "author_email", "email"),
    ({"project_name": "  "}, "project_name", "empty"),
]


@pytest.mark.parametrize(
    ("answers", "question", "hint"),
    BAD_ANSWERS,
    ids=[f"{q}:{list(a.values())[-1]}" for a, q, _ in BAD_ANSWERS],
)
def test_bad_answer_names_the_question_and_writes_nothing(
    answers: dict, question: str, hint: str, template_dir: Path, tmp_path: Path
):
    destination = tmp_path / "project"
    with pytest.raises(ValueError, match=rf"question '{question}'.*{hint}"):
        render(template_dir, destination, **answers)
    assert not destination.exists()


def test_ports_of_an_absent_orchestrator_do_not_clash(template_dir: Path, tmp_path: Path):
    """A Dagster-only project may use Prefect's default port for Dagster."""
    project = render(template_dir, tmp_path / "p", orchestrator="dagster", dagster_port=4200)
    assert "DAGSTER_PORT=4200" in (project / ".env.example").read_text()


@pytest.mark.parametrize(
    "cron",
    [
        "*/2 * * * *",
        "0 6 * * 1-5",
        "30 6 1,15 * *",
        "0 0 * JAN,JUL SUN",
        "5-55/10 8-18 * * MON-FRI",
    ],
)
def test_valid_crons_pass(cron: str):
    assert validators.cron_error(cron) == ""


@pytest.mark.parametrize(
    "cron", ["* * * * * *", "*/0 * * * *", "5-1 * * * *", "@hourly", "a b c d e"]
)
def test_invalid_crons_fail(cron: str):
    assert validators.cron_error(cron)


def test_slugify_makes_a_valid_slug_from_any_name():
    for name in ["Churn MLOps Workshop", "Atelier Été 2026!", "  --x--  ", "MLOps_101"]:
        assert validators.slug_error(validators.slugify(name)) == ""
