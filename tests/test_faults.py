"""Faults a class meets, injected for real on the native stack (`make dev`).

A terminal closed under `make dev`, or `make dev` killed outright: the servers must not
keep their ports, or the next `make dev` must find and stop what was left. Two projects
on one machine share no state. A malformed `.env` value or data file: one line that names
it, no traceback, no run half-logged.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from helpers import (
    DEFAULT_PACKAGE,
    Deadline,
    DevStack,
    ProjectEnv,
    free_port,
    listening,
    mlflow_api,
    one_line_error,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("faults")]


@pytest.fixture(scope="module")
def project(render_project, project_env_for) -> Path:
    project = render_project("faults", orchestrator="prefect")
    project_env = project_env_for(project)
    project_env.run([str(project_env.python), "generate_sample_data.py", "--rows", "500"], project)
    return project


@pytest.fixture(scope="module")
def project_env(project: Path, project_env_for) -> ProjectEnv:
    return project_env_for(project)


def mlflow_only(project_env: ProjectEnv, project: Path, port: int, **options: str) -> DevStack:
    """`make dev --only mlflow` on ``port``: the fastest real server to kill and restart."""
    uri = f"http://127.0.0.1:{port}"
    return DevStack(
        project_env,
        project,
        only=["mlflow"],
        MLFLOW_PORT=str(port),
        MLFLOW_TRACKING_URI=uri,
        **options,
    )


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return False


def test_a_closed_terminal_stops_every_server(project_env: ProjectEnv, project: Path):
    port = free_port()
    stack = mlflow_only(project_env, project, port).__enter__()
    servers = stack.server_pids()
    os.kill(stack.process.pid, signal.SIGHUP)  # what a closed terminal sends
    assert stack.process.wait(timeout=Deadline.STACK_STOPPED) == 0
    wait_until(
        lambda: not any(map(pid_alive, servers)), Deadline.STOPPED, "a server outlived SIGHUP"
    )
    assert not listening(port)
    assert not stack.record.exists()


def test_make_dev_killed_hard_is_cleaned_up_by_the_next_one(project_env: ProjectEnv, project: Path):
    port = free_port()
    killed = mlflow_only(project_env, project, port).__enter__()
    orphans = killed.server_pids()
    os.kill(killed.process.pid, signal.SIGKILL)  # no chance to stop its servers
    killed.process.wait(timeout=30)
    assert listening(port), "the killed stack's MLflow still holds the port"

    with mlflow_only(project_env, project, port) as restarted:
        assert "Stopped 1 server(s)" in restarted.output(), restarted.output()
        assert not any(map(pid_alive, orphans))
        assert listening(port)
    assert not listening(port)


def test_two_projects_on_one_machine_share_nothing(render_project, project_env_for):
    """A teacher's copy and a student's, both running: each MLflow holds only its own runs."""
    cohorts = {
        name: render_project(name.lower().replace(" ", "-"), project_name=name)
        for name in ("Cohort A", "Cohort B")
    }
    ports = {name: free_port() for name in cohorts}
    stacks = {
        name: mlflow_only(
            project_env_for(project), project, ports[name], package=name.lower().replace(" ", "_")
        )
        for name, project in cohorts.items()
    }
    with stacks["Cohort A"], stacks["Cohort B"]:
        a, b = (f"http://127.0.0.1:{ports[name]}" for name in cohorts)
        created = requests.post(
            f"{a}/api/2.0/mlflow/experiments/create", json={"name": "only-in-a"}, timeout=30
        )
        assert created.status_code == 200, created.text
        assert mlflow_api(a, "experiments/get-by-name", experiment_name="only-in-a").ok
        assert (
            mlflow_api(b, "experiments/get-by-name", experiment_name="only-in-a").status_code == 404
        )


def test_a_malformed_port_in_dotenv_is_named(project_env: ProjectEnv, project: Path):
    command = [str(project_env.python), "-m", DEFAULT_PACKAGE, "dev"]
    result = project_env.run(command, project, check=False, MLFLOW_PORT="50OO")
    assert "MLFLOW_PORT='50OO' is not a port number" in one_line_error(result)


BAD_DATA = {  # what a student's data file may look like, and the words that must name it
    "empty": ("", "is empty"),
    "renamed column": ("rename", "Missing column(s): tenure_months"),
    "text in numbers": ("text", "Text in numeric column(s): monthly_charges"),
    "missing file": (None, "not found"),
}


@pytest.fixture(scope="module")
def tracking_uri(render_project, project_env_for) -> Iterator[str]:
    """One MLflow for the bad-data cases, in a project of its own (the others kill theirs)."""
    project = render_project("faults-data", orchestrator="prefect")
    port = free_port()
    with mlflow_only(project_env_for(project), project, port):
        yield f"http://127.0.0.1:{port}"


def bad_copy(good: Path, content: str | None, destination: Path) -> Path:
    lines = good.read_text().splitlines()
    if content == "rename":
        destination.write_text("\n".join([lines[0].replace("tenure_months", "tenure"), *lines[1:]]))
    elif content == "text":
        header, first, *rest = lines
        cells = first.split(",")
        cells[header.split(",").index("monthly_charges")] = '"12,5"'  # a decimal comma
        destination.write_text("\n".join([header, ",".join(cells), *rest]))
    elif content is not None:
        destination.write_text(content)
    return destination


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_training_data_is_named_and_logs_no_run(
    project_env: ProjectEnv, project: Path, tracking_uri: str, case: str
):
    """Against a real server: one line naming the problem, and no run logged."""
    content, named = BAD_DATA[case]
    slug = case.replace(" ", "-")
    data = bad_copy(project / "data" / "customer_data.csv", content, project.parent / f"{slug}.csv")
    result = project_env.run(
        [str(project_env.python), "-m", DEFAULT_PACKAGE, "train"],
        project,
        check=False,
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_EXPERIMENT_NAME=f"bad-data-{slug}",
        DATA_PATH=str(data),
    )
    assert named in one_line_error(result)
    searched = mlflow_api(tracking_uri, "experiments/search", max_results="1000").json()
    ids = [e["experiment_id"] for e in searched.get("experiments", [])]
    runs = requests.post(
        f"{tracking_uri}/api/2.0/mlflow/runs/search", json={"experiment_ids": ids}, timeout=30
    )
    assert runs.json().get("runs", []) == [], "a refused data file logs nothing"
