"""The generated project's own commands work: its data script and its test suite.

Each project runs in the environment its own pyproject.toml declares, on the Python its
answers name: one suite per orchestrator on the default Python, and the `both` project's
suite and a story against a real MLflow server on every other Python copier.yml offers.
"""

from __future__ import annotations

import re
import socket
import subprocess

import pytest

from helpers import (
    DEFAULT_PACKAGE,
    DevStack,
    champion_version,
    copier_choices,
    copier_default,
    free_port,
)

ORCHESTRATORS = copier_choices("orchestrator")
DEFAULT_PYTHON = copier_default("python_version")
OTHER_PYTHONS = [
    version for version in copier_choices("python_version") if version != DEFAULT_PYTHON
]
NOTIFICATIONS = {"prefect": "discord", "dagster": "slack", "both": "none"}
# How many tests each render's suite holds: a test file left out of a render, or a test
# that stops being collected, shows here rather than passing unseen. Change it with the
# suite. The Dagster renders have more: the classroom's workspace, a location per machine.
SUITE_SIZE = {"prefect": 75, "dagster": 87, "both": 87}
OUTCOMES = ("passed", "failed", "skipped", "xfailed", "xpassed", "error", "errors")
SUITES = [(orchestrator, DEFAULT_PYTHON) for orchestrator in ORCHESTRATORS] + [
    ("both", version) for version in OTHER_PYTHONS
]


def pytest_summary(output: str) -> dict[str, int]:
    """The counts of pytest's closing line (``12 passed, 1 skipped, 2 warnings in 3.2s``),
    by outcome (warnings are not one)."""
    closing = output.strip().splitlines()[-1]
    counts = re.findall(r"(\d+) (\w+)", closing)
    return {word: int(count) for count, word in counts if word in OUTCOMES}


@pytest.mark.parametrize(
    ("orchestrator", "python_version"),
    [
        pytest.param(o, v, marks=pytest.mark.xdist_group(f"project-tests-{o}-{v}"))
        for o, v in SUITES
    ],
)
def test_generated_test_suite_passes(orchestrator, python_version, render_project, project_env_for):
    project = render_project(
        f"tests-{orchestrator}-{python_version}",
        orchestrator=orchestrator,
        notifications=NOTIFICATIONS[orchestrator],
        python_version=python_version,
    )
    env = project_env_for(project)
    version = env.run([str(env.python), "--version"], project).stdout
    assert version.startswith(f"Python {python_version}."), version
    result = env.run([str(env.python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], project)
    counts = pytest_summary(result.stdout)
    assert counts == {"passed": SUITE_SIZE[orchestrator]}, result.stdout[-2000:]


@pytest.mark.e2e
@pytest.mark.parametrize(
    "python_version",
    [pytest.param(v, marks=pytest.mark.xdist_group(f"story-{v}")) for v in OTHER_PYTHONS],
)
def test_train_and_predict_against_a_real_server(python_version, render_project, project_env_for):
    """The course's core story on every Python a class may pick: the data, `make dev` (the
    MLflow server), training that promotes a champion, and a prediction from it."""
    project = render_project(f"story-{python_version}", python_version=python_version)
    env = project_env_for(project)
    env.run(["make", "data"], project)
    port = free_port()
    tracking = {"MLFLOW_PORT": str(port), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    with DevStack(env, project, only=["mlflow"], **tracking):
        trained = env.run([str(env.python), "-m", DEFAULT_PACKAGE, "train"], project, **tracking)
        assert champion_version(tracking["MLFLOW_TRACKING_URI"]).status_code == 200, trained.stdout
        predict = ["--input", "data/customer_data.csv", "--output", "predictions.csv"]
        predicted = env.run(
            [str(env.python), "-m", DEFAULT_PACKAGE, "predict", *predict], project, **tracking
        )
    assert predicted.stdout.startswith("Wrote 5000 predictions"), predicted.stdout
    assert len((project / "predictions.csv").read_text().splitlines()) == 5001


def test_make_data_writes_the_customer_csv(render_project, project_env_for):
    project = render_project("make-data")
    project_env = project_env_for(project)
    output = project_env.run(["make", "data"], project).stdout
    csv = project / "data" / "customer_data.csv"
    assert "Wrote 5000 customers" in output
    assert len(csv.read_text().splitlines()) == 5001
    assert (project / ".env").is_file(), "make data creates .env from .env.example"


def test_missing_data_file_is_one_clear_line(render_project, project_env_for):
    """A data file of the student's (DATA_PATH) that is missing is named, never invented;
    only the seeded data set is written where it is missing."""
    project = render_project("no-data")
    project_env = project_env_for(project)
    result = project_env.run(
        [str(project_env.python), "-m", DEFAULT_PACKAGE, "train"],
        project,
        check=False,
        MLFLOW_TRACKING_URI="sqlite:///mlflow.db",
        DATA_PATH="data/exported_customers.csv",
    )
    assert result.returncode == 1
    assert "exported_customers.csv not found" in result.stderr
    assert not (project / "data" / "exported_customers.csv").exists()
    assert "Traceback" not in result.stderr
    assert "generate_sample_data.py" in result.stderr


def test_taken_port_is_reported_before_anything_starts(render_project, project_env_for):
    project = render_project("port-taken", orchestrator="prefect")
    project_env = project_env_for(project)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = project_env.run(
            [str(project_env.python), "-m", DEFAULT_PACKAGE, "dev"],
            project,
            check=False,
            timeout=300,
            MLFLOW_PORT=str(port),
        )
    assert result.returncode == 1
    assert f"port {port} (MLFLOW_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (project / ".workshop" / "logs").exists(), "nothing may start"


def test_clean_state_forgets_every_local_server_and_keeps_the_configuration(render_project):
    """The teacher's fresh start between sessions: MLflow's and Prefect's state in
    .workshop/, Dagster's in dagster_home/, gone; the files the project ships, kept."""
    project = render_project("clean-state", orchestrator="both")
    state = [".workshop/mlflow/mlflow.db", "dagster_home/storage/runs.db"]
    state += ["dagster_home/history/runs.db", "dagster_home/schedules/schedules.db"]
    for relative in state:
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text("state")
    subprocess.run(["make", "clean-state"], cwd=project, check=True, capture_output=True)
    assert [relative for relative in state if (project / relative).exists()] == []
    assert (project / "dagster_home/dagster.yaml").is_file()
    assert (project / "dagster_home/workspace.yaml").is_file()


def test_unreachable_tracking_server_is_named(render_project, project_env_for):
    project = render_project("no-server")
    project_env = project_env_for(project)
    project_env.run(["make", "data"], project)
    result = project_env.run(
        [str(project_env.python), "-m", DEFAULT_PACKAGE, "train"],
        project,
        check=False,
        timeout=300,
        MLFLOW_TRACKING_URI="http://127.0.0.1:9",
    )
    assert result.returncode == 1
    assert "http://127.0.0.1:9" in result.stderr and "make dev" in result.stderr
    assert "Traceback" not in result.stderr
