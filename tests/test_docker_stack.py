"""The Docker path as the project's Docker guide tells it, on a real Docker engine.

One project (orchestrator=both, French docs: the guide's reference edition) has its
ports moved through .env only. A student's session follows the guide from the project
root: host environment, data, `docker compose up`, the Prefect parts from the host, the
deployment made on the host whose scheduled run the container's worker executes, the
Dagster bonus and its schedule, everyday commands, `down` then `up` (nothing lost) and
`down -v` (nothing left). Every command of the guide's shell blocks must be one it ran.

The tests run in file order, on one xdist worker (group "docker"): each step builds on
the previous one, as the student's session does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from helpers import (
    ProjectEnv,
    champion_version,
    dagster_graphql,
    dagster_runs,
    free_port,
    listening,
    mlflow_runs_tagged,
    prefect_flow_runs,
    python_interpreter,
    scheduled_prefect_run,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.xdist_group("docker")]

TEMPLATE_ROOT = Path(__file__).resolve().parents[1]
BASE_IMAGE = os.environ.get("WORKSHOP_BASE_IMAGE", "mlops-workshop-base:bookworm")
GUIDE = "docs/README_DOCKER.md"
STACK = "docker compose --profile dagster"
PROJECT_NAME = "Atelier Docker"  # slug atelier-docker: the compose project and its volumes
SERVICES = ["mlflow", "prefect-server", "prefect-worker"]
DAGSTER_SERVICES = ["dagster-webserver", "dagster-daemon"]
VOLUMES = ["mlflow-data", "prefect-data", "dagster-data"]
PIPELINE_FLOW = "churn-training-pipeline"
DEPLOYMENT = "scheduled-training"
SCHEDULE = "churn_training_schedule"
LAUNCH_DEADLINE = 180  # s from the schedule's start to a run picked up: two ticks and a poll
RUN_DEADLINE = 420  # s for that run to finish, in a container, on a busy 2-core machine


@dataclass
class Student:
    """A student at the project's root: runs the guide's commands and remembers them."""

    project: Path
    host: ProjectEnv  # the virtual environment `pip install -r requirements.txt` filled
    ran: list[str] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return self.host.environ(self.project)

    def start(self, command: str, log: Path) -> subprocess.Popen:
        """A long-running command in the background, as a second terminal."""
        self.ran.append(command)
        with log.open("w") as output:
            return subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=self.project,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def run(self, command: str, timeout: float = 900) -> str:
        """Run one command line; fail with its output if it fails; return stdout and stderr."""
        self.ran.append(command)
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{command} exited {result.returncode}:\n{output[-4000:]}"
        return output

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"


# --- The engine and the base image ---------------------------------------------------------


def engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def unavailable(reason: str) -> None:
    """Outside CI, skip with the reason; under CI=true, Docker is installed: fail."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI installs it: see .ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def base_image() -> str:
    """No registry is reachable here: the base image is built from Debian's packages."""
    if not engine_answers():
        unavailable("no Docker engine answers `docker info`")
    present = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True)
    if present.returncode != 0:
        script = TEMPLATE_ROOT / ".ci" / "build-base-image.sh"
        built = subprocess.run(["bash", str(script), BASE_IMAGE], capture_output=True, text=True)
        if built.returncode != 0:
            unavailable(f"cannot build {BASE_IMAGE}: {built.stderr.strip()[-500:]}")
    return BASE_IMAGE


# --- The session, step by step ---------------------------------------------------------------


def move_ports_in_dotenv(student: Student) -> None:
    """Only .env changes: new ports, a one-minute schedule, the locally built base image."""
    dotenv = student.project / ".env"
    text = dotenv.read_text()
    for service, variable in [
        ("mlflow", "MLFLOW_PORT"),
        ("prefect", "PREFECT_PORT"),
        ("dagster", "DAGSTER_PORT"),
    ]:
        student.ports[service] = free_port()
        text = re.sub(rf"^{variable}=.*$", f"{variable}={student.ports[service]}", text, flags=re.M)
    text += f'SCHEDULE_CRON="* * * * *"\nBASE_IMAGE={student.facts["base_image"]}\n'
    dotenv.write_text(text)


def host_environment(student: Student, work: Path) -> subprocess.Popen:
    """The guide's `pip install -r requirements.txt`, in a fresh venv on the project's Python."""
    subprocess.run([python_interpreter("3.12"), "-m", "venv", str(student.host.venv)], check=True)
    return student.start("pip install -r requirements.txt", work / "pip-install.log")


@pytest.fixture(scope="module")
def student(render_project, base_image: str, tmp_path_factory) -> Iterator[Student]:
    work = tmp_path_factory.mktemp("docker-work")
    project = render_project(
        "docker-stack", project_name=PROJECT_NAME, orchestrator="both", docs_language="fr"
    )
    student = Student(project, ProjectEnv(work / "host-venv"), facts={"base_image": base_image})
    try:
        student.run("make env")
        move_ports_in_dotenv(student)
        pip = host_environment(student, work)
        student.facts["build"] = student.run("docker compose build", timeout=1200)  # pre-build
        assert pip.wait(timeout=900) == 0, (work / "pip-install.log").read_text()[-3000:]
        student.run("make data")
        student.run("docker compose up -d --wait", timeout=900)
        yield student
    finally:
        for process in student.facts.get("processes", []):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        subprocess.run(
            ["bash", "-c", f"{STACK} down -v --remove-orphans"],
            cwd=project,
            capture_output=True,
            timeout=300,
        )


def test_the_stack_comes_up_healthy_on_the_moved_ports(student: Student):
    listing = student.run("docker compose ps")
    for service in SERVICES[:2]:
        line = next(line for line in listing.splitlines() if f"-{service}-1" in line)
        assert "(healthy)" in line, listing
    assert "-prefect-worker-1" in listing
    published = student.run("docker compose port mlflow 5000").strip()
    assert published == f"127.0.0.1:{student.ports['mlflow']}", "bound to loopback by default"
    assert requests.get(f"{student.url('mlflow')}/health", timeout=10).status_code == 200
    built = re.findall(r"^ *(\S+)\s+Built$", student.facts["build"], flags=re.M)
    assert built == ["mlflow"], f"one image, built once: {built}"


def test_host_deploy_and_parts_run_against_the_containers(student: Student):
    """Part 6 deploys from the host first, so its schedule ticks while parts 1, 5, 7 run."""
    work = student.project.parent
    deploy = student.start(
        "python pipelines/workshop/prefect/Prefect_Workshop.py deploy", work / "deploy.log"
    )
    student.facts["processes"] = [deploy]
    wait_until(
        lambda: "Press Ctrl+C" in (work / "deploy.log").read_text(),
        300,
        "deploy did not register the deployment",
    )
    student.facts["deploy"] = deploy
    shows = {  # what each part prints when it worked
        "part1": "churned",
        "part5": "champion",
        "part7": "part7-broken-data failed as intended",  # its failure is the lesson
    }
    for part, shown in shows.items():
        output = student.run(f"python pipelines/workshop/prefect/Prefect_Workshop.py {part}")
        assert shown in output, output[-3000:]
    champion = champion_version(student.url("mlflow"))
    assert champion.status_code == 200, champion.text
    deploy_log = (work / "deploy.log").read_text()
    assert "1 worker(s) of the pool" in deploy_log, deploy_log
    assert f"http://127.0.0.1:{student.ports['prefect']}/deployments/" in deploy_log


def test_the_container_worker_runs_the_host_deployment(student: Student):
    api = f"{student.url('prefect')}/api"
    deployment = requests.get(f"{api}/deployments/name/{PIPELINE_FLOW}/{DEPLOYMENT}", timeout=10)
    info = deployment.json()
    [step] = info["pull_steps"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == (
        "{{ $PROJECT_ROOT }}"
    )

    run = scheduled_prefect_run(api, PIPELINE_FLOW, info["id"], LAUNCH_DEADLINE, RUN_DEADLINE)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    logged = mlflow_runs_tagged(student.url("mlflow"), "prefect_flow_run_id", run["id"])
    assert len(logged) == 3, "the run logged its three candidates to the container's MLflow"
    worker_log = student.run("docker compose logs prefect-worker")
    assert run["name"] in worker_log and "FileNotFoundError" not in worker_log
    assert "Bad git executable" not in worker_log
    deploy = student.facts["deploy"]
    deploy.send_signal(signal.SIGINT)  # Ctrl+C
    assert deploy.wait(timeout=60) == 0
    assert requests.get(f"{api}/deployments/{info['id']}", timeout=10).json()["paused"]
    student.facts["deployment_id"] = info["id"]
    student.facts["prefect_run"] = run["id"]


def test_the_dagster_bonus_schedule_fires_in_the_containers(student: Student):
    student.run(f"{STACK} up -d --wait", timeout=900)
    started = student.run("make dagster-schedule-on")
    assert "exec -T dagster-daemon" in started, "the verb acts on the running containers"
    url = student.url("dagster")

    def finished() -> dict | None:
        runs = dagster_runs(url, "dagster/schedule_name", SCHEDULE)
        return next((r for r in runs if r["status"] in {"SUCCESS", "FAILURE", "CANCELED"}), None)

    run = wait_until(finished, LAUNCH_DEADLINE + RUN_DEADLINE, "no scheduled Dagster run", 3)
    assert run["status"] == "SUCCESS", run
    assert len(mlflow_runs_tagged(student.url("mlflow"), "dagster_run_id", run["runId"])) == 3
    student.run("make dagster-schedule-off")  # the state a student leaves it in, kept below
    student.facts["dagster_run"] = run["runId"]


def test_everyday_commands(student: Student):
    logs = student.start("docker compose logs -f prefect-worker", student.project.parent / "f.log")
    wait_until(
        lambda: "Worker 'ProcessWorker" in (student.project.parent / "f.log").read_text(),
        60,
        "logs -f showed nothing",
    )
    os.killpg(logs.pid, signal.SIGINT)
    logs.wait(timeout=30)
    rebuilt = student.run("docker compose build")
    assert "CACHED" in rebuilt or "cached" in rebuilt.lower()
    student.run("docker compose restart prefect-worker")
    running = ["docker", "compose", "ps", "--status", "running", "--quiet", "prefect-worker"]
    wait_until(
        lambda: subprocess.run(running, cwd=student.project, capture_output=True).stdout.strip(),
        120,
        "the worker did not come back",
    )


def test_down_then_up_keeps_runs_models_deployments_and_schedules(student: Student):
    student.run(f"{STACK} down")
    assert not listening(student.ports["mlflow"])
    student.run(f"{STACK} up -d --wait", timeout=900)
    api = f"{student.url('prefect')}/api"
    deployment = requests.get(f"{api}/deployments/{student.facts['deployment_id']}", timeout=10)
    assert deployment.status_code == 200 and deployment.json()["paused"]
    kept = prefect_flow_runs(
        api, PIPELINE_FLOW, flow_runs={"id": {"any_": [student.facts["prefect_run"]]}}
    )
    assert [run["state"]["type"] for run in kept] == ["COMPLETED"]
    assert champion_version(student.url("mlflow")).status_code == 200
    url = student.url("dagster")
    wait_until(
        lambda: dagster_runs(url, "dagster/schedule_name", SCHEDULE), 120, "Dagster runs lost"
    )
    schedule = dagster_graphql(url, SCHEDULE_STATE)["scheduleOrError"]["scheduleState"]
    assert schedule["status"] == "STOPPED", "the schedule keeps the state the student left"


SCHEDULE_STATE = """
{ scheduleOrError(scheduleSelector: {repositoryLocationName: "churn_pipeline",
  repositoryName: "__repository__", scheduleName: "churn_training_schedule"}) {
  ... on Schedule { scheduleState { status } } } }
"""


def test_down_v_leaves_no_container_volume_or_port(student: Student):
    student.run(f"{STACK} down -v")
    project_label = "label=com.docker.compose.project=atelier-docker"
    containers = subprocess.run(
        ["docker", "ps", "-aq", "--filter", project_label], capture_output=True, text=True
    )
    volumes = subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", project_label], capture_output=True, text=True
    )
    assert containers.stdout.strip() == "" and volumes.stdout.strip() == ""
    assert not any(listening(port) for port in student.ports.values())


def guide_commands(guide: Path) -> list[str]:
    """Every line of the guide's ```bash blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", guide.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_every_command_of_the_guide_was_run(student: Student):
    commands = guide_commands(student.project / GUIDE)
    assert len(commands) >= 12, commands
    assert not [command for command in commands if command not in student.ran]
