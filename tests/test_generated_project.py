"""The generated project's own commands work: its data script and its test suite.

One render per orchestrator choice, all sharing the one project environment.
"""

from __future__ import annotations

import socket

import pytest

from helpers import DEFAULT_PACKAGE

ORCHESTRATORS = ["prefect", "dagster", "both"]
NOTIFICATIONS = {"prefect": "discord", "dagster": "slack", "both": "none"}


@pytest.mark.parametrize(
    "orchestrator",
    [pytest.param(o, marks=pytest.mark.xdist_group(f"project-tests-{o}")) for o in ORCHESTRATORS],
)
def test_generated_test_suite_passes(orchestrator, render_project, project_env):
    project = render_project(
        f"tests-{orchestrator}",
        orchestrator=orchestrator,
        notifications=NOTIFICATIONS[orchestrator],
    )
    result = project_env.run(
        [str(project_env.python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], project
    )
    assert " passed" in result.stdout and " failed" not in result.stdout


def test_make_data_writes_the_customer_csv(render_project, project_env):
    project = render_project("make-data")
    output = project_env.run(["make", "data"], project).stdout
    csv = project / "data" / "customer_data.csv"
    assert "Wrote 5000 customers" in output
    assert len(csv.read_text().splitlines()) == 5001
    assert (project / ".env").is_file(), "make data creates .env from .env.example"


def test_missing_data_file_is_one_clear_line(render_project, project_env):
    project = render_project("no-data")
    result = project_env.run(
        [str(project_env.python), "-m", DEFAULT_PACKAGE, "train"],
        project,
        check=False,
        MLFLOW_TRACKING_URI="sqlite:///mlflow.db",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "generate_sample_data.py" in result.stderr


def test_taken_port_is_reported_before_anything_starts(render_project, project_env):
    project = render_project("port-taken", orchestrator="prefect")
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


def test_unreachable_tracking_server_is_named(render_project, project_env):
    project = render_project("no-server")
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
