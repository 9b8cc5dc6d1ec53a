"""Faults a class meets, injected for real on the native stack (`make dev`).

A terminal closed under `make dev`, or `make dev` killed outright: the servers must not
keep their ports, or the next `make dev` must find and stop what was left. Two projects
on one machine share no state.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import requests

from helpers import DevStack, ProjectEnv, free_port, listening, mlflow_api, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("faults")]


@pytest.fixture(scope="module")
def project(render_project) -> Path:
    return render_project("faults", orchestrator="prefect")


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


def recorded_pids(project: Path) -> list[int]:
    record = project / ".workshop" / "devstack.pids"
    return [int(line.split("\t")[0]) for line in record.read_text().splitlines()]


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        return not Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return False


def test_a_closed_terminal_stops_every_server(project_env: ProjectEnv, project: Path):
    port = free_port()
    stack = mlflow_only(project_env, project, port).__enter__()
    servers = recorded_pids(project)
    os.kill(stack.process.pid, signal.SIGHUP)  # what a closed terminal sends
    assert stack.process.wait(timeout=60) == 0
    wait_until(lambda: not any(map(pid_alive, servers)), 30, "a server outlived SIGHUP")
    assert not listening(port)
    assert not (project / ".workshop" / "devstack.pids").exists()


def test_make_dev_killed_hard_is_cleaned_up_by_the_next_one(project_env: ProjectEnv, project: Path):
    port = free_port()
    killed = mlflow_only(project_env, project, port).__enter__()
    orphans = recorded_pids(project)
    os.kill(killed.process.pid, signal.SIGKILL)  # no chance to stop its servers
    killed.process.wait(timeout=30)
    assert listening(port), "the killed stack's MLflow still holds the port"

    with mlflow_only(project_env, project, port) as restarted:
        assert "Stopped 1 server(s)" in restarted.output(), restarted.output()
        assert not any(map(pid_alive, orphans))
        assert listening(port)
    assert not listening(port)


def test_two_projects_on_one_machine_share_nothing(render_project, project_env: ProjectEnv):
    """A teacher's copy and a student's, both running: each MLflow holds only its own runs."""
    cohorts = {
        name: render_project(name.lower().replace(" ", "-"), project_name=name)
        for name in ("Cohort A", "Cohort B")
    }
    ports = {name: free_port() for name in cohorts}
    stacks = {
        name: mlflow_only(project_env, project, ports[name], package=name.lower().replace(" ", "_"))
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
