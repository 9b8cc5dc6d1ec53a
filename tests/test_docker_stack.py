"""The Docker path as the project's Docker guide tells it, on a real Docker engine.

One project per orchestrator answer, each with its ports moved through .env only. A
student's session follows the guide from the project root: host environment, data,
`docker compose up`, the Prefect parts from the host, the deployment made on the host
whose scheduled run the container's worker executes, the Dagster schedule, everyday
commands, `down`, a rebuilt image and `up` (nothing lost) and `down -v` (nothing left).
Every command of the guide's shell blocks must be one the session ran. The `both` project
follows the French guide (the reference edition) and is also looked at in a real browser.

The faults a class meets, in Docker: the webhook URL set in .env is written nowhere else
(logs, volumes); the worker killed mid-run and a second project on the same machine (the
Prefect-only session). Each fault's figures go to the report.

Each class is one student's session on one stack: its tests run in order and build on
each other, and the stack comes down when the class ends (one stack at a time). Every
session's host environment starts installing with the first, the later ones on the core
the running session leaves idle.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from helpers import (
    CANDIDATES,
    DAGSTER_FINAL_STATUSES,
    EXPERIMENT,
    PREFECT_FINAL_STATES,
    Deadline,
    Facts,
    ProjectEnv,
    WebhookRecorder,
    champion_version,
    dagster_graphql,
    dagster_runs,
    free_port,
    listening,
    messages,
    mlflow_api,
    mlflow_runs_tagged,
    places_holding,
    prefect_flow_runs,
    prefect_get,
    prefect_heartbeat_seconds,
    prefect_post,
    prefect_scheduled_runs,
    python_interpreter,
    record_fault,
    scheduled_prefect_run,
    sentence_pattern,
    succeeded,
    trained_candidates,
    unavailable,
    wait_for_output,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.xdist_group("docker")]

GUIDE = "docs/README_DOCKER.md"
PIPELINE_FLOW = "churn-training-pipeline"
DEPLOYMENT = "scheduled-training"
SCHEDULE = "churn_training_schedule"
MONITORING_FLOW = "churn-batch-monitoring"
MONITORING_DEPLOYMENT = "batch-monitoring"
# Where the browser's screenshots go; the guide's images were taken with this test.
SCREENSHOTS = Path(os.environ.get("WORKSHOP_SCREENSHOTS", "/tmp/mlops-workshop-screenshots"))


@dataclass(frozen=True)
class Answers:
    """The answers a project of the story is rendered with, and what its stack holds."""

    project_name: str
    orchestrator: str
    docs_language: str

    @property
    def slug(self) -> str:
        return self.project_name.lower().replace(" ", "-")

    @property
    def prefect(self) -> bool:
        return self.orchestrator in {"prefect", "both"}

    @property
    def dagster(self) -> bool:
        return self.orchestrator in {"dagster", "both"}

    @property
    def stack(self) -> str:
        """The compose command for the whole stack: Dagster is a profile when it is the bonus."""
        return (
            "docker compose --profile dagster" if self.orchestrator == "both" else "docker compose"
        )

    @property
    def healthchecked(self) -> list[str]:
        """The services `up --wait` waits for in the first `docker compose up`."""
        prefect = ["prefect-server"] if self.prefect else []
        dagster = (
            [
                "dagster-pipeline-code",
                "dagster-workshop-code",
                "dagster-exercises-code",
                "dagster-webserver",
            ]
            if self.orchestrator == "dagster"
            else []
        )
        return ["mlflow", *prefect, *dagster]


@dataclass
class Student:
    """A student at the project's root: runs the guide's commands and remembers them."""

    project: Path
    answers: Answers
    host: ProjectEnv  # the virtual environment `pip install -r requirements.txt` filled
    ran: list[str] = field(default_factory=list)
    host_install: subprocess.Popen | None = None  # that `pip install`, until it ends
    ports: dict[str, int] = field(default_factory=dict)
    facts: Facts = field(default_factory=Facts)
    background: list[subprocess.Popen] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return self.host.environ(self.project)

    @property
    def work(self) -> Path:
        """A folder beside the project for logs (the project's own files stay as rendered)."""
        return self.host.venv.parent

    def start(self, command: str, log_name: str) -> subprocess.Popen:
        """A long-running command in the background, as in a second terminal."""
        self.ran.append(command)
        with (self.work / log_name).open("w") as output:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=self.project,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append(process)
        return process

    def log(self, log_name: str) -> str:
        return (self.work / log_name).read_text()

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
        return succeeded(result).stdout + result.stderr

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"


# --- The session's start: rendered, configured, built, up ---------------------------------


def move_ports_in_dotenv(student: Student) -> None:
    """Only .env changes: new ports, a one-minute schedule, the locally built base image."""
    dotenv = student.project / ".env"
    text = dotenv.read_text()
    for service, variable in [
        ("mlflow", "MLFLOW_PORT"),
        ("prefect", "PREFECT_PORT"),
        ("dagster", "DAGSTER_PORT"),
    ]:
        if re.search(rf"^{variable}=", text, flags=re.M):
            student.ports[service] = free_port()
            text = re.sub(
                rf"^{variable}=.*$", f"{variable}={student.ports[service]}", text, flags=re.M
            )
    text += f'SCHEDULE_CRON="* * * * *"\nBASE_IMAGE={student.facts["base_image"]}\n'
    dotenv.write_text(text)


# The sessions after the first install their host environment at this niceness: on the
# core the running session leaves idle, not on the one it needs.
LATER_INSTALL_NICENESS = 10


@pytest.fixture(scope="module")
def students(
    request, render_project, base_image: str, tmp_path_factory
) -> Iterator[dict[str, Student]]:
    """Every session this run holds, rendered, its host environment installing.

    `pip install -r requirements.txt` is the longest step of a session's start (about
    100 s on one core, beside a cached image build): each session's starts at once, the
    later ones at a lower priority, so that no stack waits for its own.
    """
    sessions = dict.fromkeys(  # the classes of the tests selected, in their order
        item.cls for item in request.session.items if item.module is request.module
    )
    students = {}
    try:
        for order, session in enumerate(sessions):
            answers: Answers = session.answers
            project = render_project(
                answers.slug,
                project_name=answers.project_name,
                orchestrator=answers.orchestrator,
                docs_language=answers.docs_language,
            )
            work = tmp_path_factory.mktemp(f"{answers.slug}-work")
            student = Student(
                project, answers, ProjectEnv(work / "host-venv"), facts=Facts(base_image=base_image)
            )
            tear_down(student)  # a stack a killed run left: its containers restart with the engine
            subprocess.run(
                [python_interpreter("3.12"), "-m", "venv", str(student.host.venv)], check=True
            )
            student.host_install = student.start(
                "pip install -r requirements.txt", "pip-install.log"
            )
            if order:
                os.setpriority(os.PRIO_PGRP, student.host_install.pid, LATER_INSTALL_NICENESS)
            students[answers.slug] = student
        yield students
    finally:
        for student in students.values():
            stop_background(student)


@pytest.fixture(scope="class")
def student(request, students: dict[str, Student]) -> Iterator[Student]:
    """The class's project, from `make env` to a healthy stack, as the quick start says."""
    student = students[request.cls.answers.slug]
    try:
        student.run("make env")
        move_ports_in_dotenv(student)
        student.facts["build"] = student.run("docker compose build", timeout=1200)  # pre-build
        installed = student.host_install.wait(timeout=900)
        assert installed == 0, student.log("pip-install.log")[-3000:]
        if not getattr(request.cls, "skips_the_data_step", False):
            student.run("make data")
        student.run("docker compose up -d --wait", timeout=900)
        yield student
    finally:
        tear_down(student)


def stop_background(student: Student) -> None:
    """The commands the session left running in the background, stopped."""
    for process in student.background:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def tear_down(student: Student) -> None:
    """Whatever happened: the session's background commands stopped, its stack removed."""
    stop_background(student)
    subprocess.run(
        ["bash", "-c", f"{student.answers.stack} down -v --remove-orphans"],
        cwd=student.project,
        capture_output=True,
        timeout=300,
    )


# --- The steps of the guide, each one a check ---------------------------------------------


def stack_comes_up_healthy_on_the_moved_ports(student: Student) -> None:
    listing = student.run("docker compose ps")
    for service in student.answers.healthchecked:
        line = next(line for line in listing.splitlines() if f"-{service}-1" in line)
        assert "(healthy)" in line, listing
    if student.answers.prefect:
        assert "-prefect-worker-1" in listing
    published = student.run("docker compose port mlflow 5000").strip()
    assert published == f"127.0.0.1:{student.ports['mlflow']}", "bound to loopback by default"
    assert requests.get(f"{student.url('mlflow')}/health", timeout=10).status_code == 200
    built = re.findall(r"^ *(\S+)\s+Built$", student.facts["build"], flags=re.M)
    assert built == ["mlflow"], f"one image, built once: {built}"


def host_deploy_and_parts_run_against_the_containers(student: Student) -> None:
    """Part 6 deploys from the host first, so its schedule ticks while parts 1, 5, 7 run."""
    deploy = student.start(
        "python pipelines/workshop/prefect/Prefect_Workshop.py deploy", "deploy.log"
    )
    watching = messages(student.project)["prefect"]["deploy"]["watching"]
    wait_for_output(deploy, student.work / "deploy.log", watching, Deadline.DEPLOYED, "deploy")
    student.facts["deploy"] = deploy
    said = messages(student.project)
    texts = said["workshop"]["prefect"]
    shows = {  # what each part prints when it worked
        "part1": sentence_pattern(texts["part1"]["summary"]),
        # The schedule may have promoted a champion already: part 5 then compares with it.
        "part5": re.compile(
            "|".join(
                sentence_pattern(said["tracking"][verdict]).pattern
                for verdict in ("new_champion", "not_champion")
            )
        ),
        # Its failure is the lesson.
        "part7": sentence_pattern(texts["part7"]["failed_as_intended"]),
    }
    for part, shown in shows.items():
        output = student.run(f"python pipelines/workshop/prefect/Prefect_Workshop.py {part}")
        assert re.search(shown, output), output[-3000:]
    champion = champion_version(student.url("mlflow"))
    assert champion.status_code == 200, champion.text
    deploy_log = student.log("deploy.log")
    online = messages(student.project)["prefect"]["workers"]["online"]
    assert online.format(count=1) in deploy_log, deploy_log
    assert f"http://127.0.0.1:{student.ports['prefect']}/deployments/" in deploy_log


def the_first_deploy_wrote_the_data_that_make_data_writes(student: Student) -> None:
    """With no data step, deploying (the first host command that needs the data) wrote the
    seeded data set for the containers, which read data/ without writing it; `make data`,
    the guide's command, writes the very same file again."""
    data = student.project / "data" / "customer_data.csv"
    seeded = messages(student.project)["data"]["seeded_data_written"]
    assert sentence_pattern(seeded).search(student.log("deploy.log")), student.log("deploy.log")
    written_by_deploy = data.read_bytes()
    student.run("make data")
    assert data.read_bytes() == written_by_deploy


def container_worker_runs_the_host_deployment(student: Student) -> None:
    api = f"{student.url('prefect')}/api"
    info = prefect_get(f"{api}/deployments/name/{PIPELINE_FLOW}/{DEPLOYMENT}")
    [step] = info["pull_steps"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == (
        "{{ $PROJECT_ROOT }}"
    )

    run = scheduled_prefect_run(
        api, PIPELINE_FLOW, info["id"], Deadline.SCHEDULE_LAUNCH, Deadline.SCHEDULED_RUN
    )
    assert run["state"]["type"] == "COMPLETED", run["state"]
    logged = trained_candidates(student.url("mlflow"), "prefect_flow_run_id", run["id"])
    assert logged == CANDIDATES, "the run logged its candidates to the container's MLflow"
    worker_log = student.run("docker compose logs prefect-worker")
    assert run["name"] in worker_log and "FileNotFoundError" not in worker_log
    assert "Bad git executable" not in worker_log
    assert "http://mlflow:5000" not in worker_log, "links in the logs open in the host's browser"
    deploy = student.facts["deploy"]
    deploy.send_signal(signal.SIGINT)  # Ctrl+C
    assert deploy.wait(timeout=Deadline.STOPPED) == 0
    assert prefect_get(f"{api}/deployments/{info['id']}")["paused"]
    student.facts["deployment_id"] = info["id"]
    student.facts["prefect_run"] = run


def deployment_runs(student: Student) -> list[dict]:
    """The runs the training deployment's schedule created, oldest first."""
    api = f"{student.url('prefect')}/api"
    return prefect_scheduled_runs(api, PIPELINE_FLOW, student.facts["deployment_id"])


def a_killed_worker_crashes_its_run_and_the_restarted_one_runs_the_next(
    student: Student, record_property
) -> None:
    """The guide's troubleshooting, done: `docker compose kill prefect-worker` while a
    scheduled run trains, the run marked Crashed, `restart` brings the next tick."""
    before = {run["id"] for run in deployment_runs(student)}
    deploy = student.start(  # deploying again resumes the schedule Ctrl+C paused
        "python pipelines/workshop/prefect/Prefect_Workshop.py deploy", "redeploy.log"
    )
    log = student.work / "redeploy.log"
    watching = messages(student.project)["prefect"]["deploy"]["watching"]
    wait_for_output(deploy, log, watching, Deadline.DEPLOYED, "deploy again")

    def training() -> dict | None:
        """A new scheduled run that logs to MLflow: its heartbeats have started."""
        running = [r for r in deployment_runs(student) if r["state"]["type"] == "RUNNING"]
        url = student.url("mlflow")
        return next(
            (
                r
                for r in running
                if r["id"] not in before and mlflow_runs_tagged(url, "prefect_flow_run_id", r["id"])
            ),
            None,
        )

    run = wait_until(training, Deadline.SCHEDULE_LAUNCH + 120, "no scheduled run to kill", 1)
    student.run("docker compose kill prefect-worker")
    injected = time.monotonic()

    def state_of_the_killed_run() -> dict | None:
        state = next(r for r in deployment_runs(student) if r["id"] == run["id"])["state"]
        return state if state["type"] != "RUNNING" else None

    # The automation's window (three missed heartbeats), and its checks.
    crash_deadline = 3 * prefect_heartbeat_seconds(student.project) + 120
    state = wait_until(state_of_the_killed_run, crash_deadline, "still Running", 3)
    crashed = time.monotonic()
    crash_message = messages(student.project)["prefect"]["crash"]["message"]
    assert state["type"] == "CRASHED" and crash_message in state["message"], state
    student.run("docker compose restart prefect-worker")

    def a_later_tick_completed() -> dict | None:
        later = [
            r
            for r in deployment_runs(student)
            if r["expected_start_time"] > run["expected_start_time"]
        ]
        return next((r for r in later if r["state"]["type"] == "COMPLETED"), None)

    deadline = Deadline.SCHEDULE_LAUNCH + Deadline.SCHEDULED_RUN
    wait_until(a_later_tick_completed, deadline, "no tick after restart", 3)
    recovered = time.monotonic()
    starts = [r["expected_start_time"] for r in deployment_runs(student)]
    assert len(starts) == len(set(starts)), f"a tick ran twice: {starts}"
    deploy.send_signal(signal.SIGINT)  # Ctrl+C pauses the schedule again
    assert deploy.wait(timeout=Deadline.STOPPED) == 0
    record_fault(
        record_property,
        "Docker: prefect-worker killed mid-run",
        marked_crashed_after=crashed - injected,
        next_scheduled_run_completed_after=recovered - injected,
    )


def set_in_dotenv(student: Student, **values: str) -> None:
    """What a student edits in .env: each variable set once, to the new value."""
    dotenv = student.project / ".env"
    text = dotenv.read_text()
    for variable, value in values.items():
        text = re.sub(rf"^#? ?{variable}=.*\n", "", text, flags=re.M) + f"{variable}={value}\n"
    dotenv.write_text(text)


def network_gateway(student: Student) -> str:
    """The host's address on the project's Docker network, where containers reach it."""
    network = f"{student.answers.slug}_default"
    gateway = "{{(index .IPAM.Config 0).Gateway}}"
    inspected = ["docker", "network", "inspect", network, "--format", gateway]
    return subprocess.run(inspected, capture_output=True, text=True, check=True).stdout.strip()


def monitoring_in_the_containers(student: Student) -> None:
    """Part 8 deployed from the host: a drifted batch alerts and retrains in the stack."""
    webhook = WebhookRecorder(reachable_at=network_gateway(student))
    try:
        set_in_dotenv(
            student,
            NOTIFICATIONS="discord",
            DISCORD_WEBHOOK_URL=webhook.url,
            MONITORING_CRON='"* * * * *"',
        )
        student.run("docker compose up -d --wait", timeout=900)  # the worker gets the new .env
        said = messages(student.project)
        wrote = sentence_pattern(said["cli"]["wrote_drifted_batch"])
        assert wrote.search(student.run("make drift-batch"))
        monitor = student.start(
            "python pipelines/workshop/prefect/Prefect_Workshop.py monitor-deploy", "monitor.log"
        )
        log = student.work / "monitor.log"
        watching = messages(student.project)["prefect"]["deploy"]["watching"]
        wait_for_output(monitor, log, watching, Deadline.DEPLOYED, "monitor-deploy")
        api = f"{student.url('prefect')}/api"
        info = prefect_get(f"{api}/deployments/name/{MONITORING_FLOW}/{MONITORING_DEPLOYMENT}")
        monitoring = scheduled_prefect_run(
            api, MONITORING_FLOW, info["id"], Deadline.SCHEDULE_LAUNCH, Deadline.SCHEDULED_RUN
        )
        assert monitoring["state"]["type"] == "COMPLETED", monitoring["state"]
        alert = wait_until(
            lambda: webhook.payloads, Deadline.NOTIFIED, "no drift alert reached the webhook"
        )
        title = said["monitoring"]["alert_title"].format(batch="batch_001.csv")
        assert title in alert[0]["content"], alert
        assert f"http://localhost:{student.ports['mlflow']}/#/experiments/" in alert[0]["content"]

        def retraining() -> dict | None:
            """The training run the monitoring run started (not the schedule, not the test)."""
            runs = prefect_flow_runs(api, PIPELINE_FLOW)
            started = [r for r in runs if "drift" in r["tags"]]
            ended = [r for r in started if r["state"]["type"] in PREFECT_FINAL_STATES]
            return ended[0] if ended else None

        deadline = Deadline.SCHEDULE_LAUNCH + Deadline.SCHEDULED_RUN
        training = wait_until(retraining, deadline, "drift started no training run", 3)
        assert training["state"]["type"] == "COMPLETED", training["state"]
        logged = trained_candidates(student.url("mlflow"), "prefect_flow_run_id", training["id"])
        assert logged == CANDIDATES, "the retraining logged its candidates to the stack's MLflow"
        assert places_in_the_stack_holding(student, webhook.url) == [".env"]
    finally:
        webhook.close()
    os.killpg(monitor.pid, signal.SIGINT)  # Ctrl+C pauses the monitoring
    assert monitor.wait(timeout=Deadline.STOPPED) == 0


def places_in_the_stack_holding(student: Student, secret: str) -> list[str]:
    """Where a secret ended up: the project's files, the host commands' and the containers'
    logs, and every file of the stack's volumes (databases with their journals, artifacts)."""
    places = places_holding(student.project, secret)
    places += [log.name for log in student.work.glob("*.log") if secret in log.read_text()]
    if secret in student.run(f"{student.answers.stack} logs --no-color"):
        places.append("docker compose logs")
    for volume in compose_objects(student, "volume", "ls", "-q"):
        search = ["grep", "--recursive", "--files-with-matches", "--fixed-strings", secret, "/v"]
        mounted = ["docker", "run", "--rm", "--volume", f"{volume}:/v:ro"]
        image = student.facts["base_image"]
        found = subprocess.run([*mounted, image, *search], capture_output=True, text=True)
        assert found.returncode in {0, 1}, found.stderr  # 1: no file holds it
        places += [f"{volume}:{path.removeprefix('/v/')}" for path in found.stdout.split()]
    return sorted(places)


def dagster_schedule_fires_in_the_containers(student: Student) -> None:
    student.run(f"{student.answers.stack} up -d --wait", timeout=900)
    started = student.run("make dagster-schedule-on")
    assert "exec -T dagster-daemon" in started, "the verb acts on the running containers"
    url = student.url("dagster")

    def finished() -> dict | None:
        runs = dagster_runs(url, "dagster/schedule_name", SCHEDULE)
        return next((r for r in runs if r["status"] in DAGSTER_FINAL_STATUSES), None)

    deadline = Deadline.SCHEDULE_LAUNCH + Deadline.SCHEDULED_RUN
    run = wait_until(finished, deadline, "no scheduled Dagster run", 3)
    assert run["status"] == "SUCCESS", run
    logged = trained_candidates(student.url("mlflow"), "dagster_run_id", run["runId"])
    assert logged == CANDIDATES
    student.run("make dagster-schedule-off")  # the state a student leaves it in, kept below


def everyday_commands(student: Student) -> None:
    """Follow a service's logs, rebuild from the cache, restart the service that runs flows."""
    service, says = (
        ("prefect-worker", "Worker 'ProcessWorker")
        if student.answers.prefect
        else ("dagster-pipeline-code", "RUN_SUCCESS")  # the code server runs the runs
    )
    logs = student.start(f"docker compose logs -f {service}", "follow.log")
    wait_until(lambda: says in student.log("follow.log"), 60, "logs -f showed nothing")
    os.killpg(logs.pid, signal.SIGINT)
    logs.wait(timeout=30)
    rebuilt = student.run("docker compose build")
    assert "CACHED" in rebuilt or "cached" in rebuilt.lower()
    student.run(f"docker compose restart {service}")
    running = ["docker", "compose", "ps", "--status", "running", "--quiet", service]
    wait_until(
        lambda: subprocess.run(running, cwd=student.project, capture_output=True).stdout.strip(),
        120,
        f"{service} did not come back",
    )


SCHEDULE_STATE = """
{ scheduleOrError(scheduleSelector: {repositoryLocationName: "churn_pipeline",
  repositoryName: "__repository__", scheduleName: "churn_training_schedule"}) {
  ... on Schedule { scheduleState { status } } } }
"""


def compose_objects(student: Student, *listing: str) -> list[str]:
    """The containers or volumes compose made for the project (by its label)."""
    label = f"label=com.docker.compose.project={student.answers.slug}"
    shown = subprocess.run(["docker", *listing, "--filter", label], capture_output=True, text=True)
    assert shown.returncode == 0, f"docker {' '.join(listing)}: {shown.stderr}"  # not "none"
    return shown.stdout.split()


def volumes_are_named_after_the_project(student: Student) -> None:
    """Every volume the whole stack made carries the project's name, as the guide's table."""
    volumes = compose_objects(student, "volume", "ls", "-q")
    guide = (student.project / GUIDE).read_text()
    in_the_guide = re.findall(r"^\| `([\w.-]+_[\w-]+-data)` \|", guide, re.M)
    assert sorted(volumes) == sorted(in_the_guide), "the guide names the project's real volumes"
    assert all(volume.startswith(f"{student.answers.slug}_") for volume in volumes)


def image_id(student: Student) -> str:
    """The id of the image compose built for the project."""
    return subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", f"{student.answers.slug}:latest"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def rebuild_after_a_pyproject_change(student: Student) -> str:
    """What the guide's `build` is for: pyproject.toml changed, so the stack is reinstalled
    into a new image (here the change is the description's, the versions stay)."""
    before = image_id(student)
    pyproject = student.project / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('description = "', 'description = "v2 ', 1))
    student.run("docker compose build", timeout=1200)
    assert image_id(student) != before, "the change made a new image"
    return image_id(student)


def down_rebuild_up_keeps_everything(student: Student) -> None:
    """Runs, models, deployments and schedules survive `down`, a rebuilt image and `up`
    (the volumes do)."""
    volumes_are_named_after_the_project(student)
    stack = student.answers.stack
    student.run(f"{stack} down")
    assert not listening(student.ports["mlflow"])
    rebuilt = rebuild_after_a_pyproject_change(student)
    student.run(f"{stack} up -d --wait", timeout=900)
    for container in compose_objects(student, "ps", "-q"):
        inspected = ["docker", "inspect", "--format", "{{.Image}}", container]
        ran = subprocess.run(inspected, capture_output=True, text=True, check=True).stdout
        assert ran.strip() == rebuilt, "every service runs the rebuilt image"
    assert champion_version(student.url("mlflow")).status_code == 200
    if student.answers.prefect:
        api = f"{student.url('prefect')}/api"
        assert prefect_get(f"{api}/deployments/{student.facts['deployment_id']}")["paused"]
        kept_run = {"id": {"any_": [student.facts["prefect_run"]["id"]]}}
        kept = prefect_flow_runs(api, PIPELINE_FLOW, flow_runs=kept_run)
        assert [run["state"]["type"] for run in kept] == ["COMPLETED"]
    if student.answers.dagster:
        url = student.url("dagster")
        wait_until(
            lambda: dagster_runs(url, "dagster/schedule_name", SCHEDULE),
            Deadline.SERVER_UP,
            "Dagster runs lost",
        )
        schedule = dagster_graphql(url, SCHEDULE_STATE)["scheduleOrError"]["scheduleState"]
        assert schedule["status"] == "STOPPED", "the schedule keeps the state the student left"


def a_second_project_beside_it_shares_nothing(
    student: Student, render_project, tmp_path_factory
) -> None:
    """Two projects on one machine (a teacher's copy and a student's, two cohorts), both
    with Prefect: the second's stack comes up beside the first, on its own ports, with its
    own containers, volumes and data (none of the first's deployments or models); its
    `down -v` leaves the first untouched."""
    answers = Answers("Second Cohort", "prefect", "en")
    project = render_project(
        answers.slug, project_name=answers.project_name, orchestrator=answers.orchestrator
    )
    work = tmp_path_factory.mktemp(f"{answers.slug}-work")
    second = Student(project, answers, ProjectEnv(work / "no-venv"), facts=student.facts)
    try:
        second.run("make env")
        move_ports_in_dotenv(second)
        second.run("docker compose up -d --wait", timeout=1200)
        mine, theirs = (compose_objects(s, "ps", "-q") for s in (student, second))
        assert mine and theirs and not set(mine) & set(theirs), "both stacks run, apart"
        volumes = [compose_objects(s, "volume", "ls", "-q") for s in (student, second)]
        assert all(v.startswith(f"{answers.slug}_") for v in volumes[1]), volumes
        assert not set(volumes[0]) & set(volumes[1]), volumes
        assert champion_version(student.url("mlflow")).status_code == 200
        assert champion_version(second.url("mlflow")).status_code == 404, "its own MLflow"
        assert deployment_names(student), "the first project's deployments, to compare with"
        assert deployment_names(second) == [], "its own Prefect, empty"
    finally:
        tear_down(second)
    assert compose_objects(student, "ps", "-q") == mine, "the first stack still runs"
    assert compose_objects(student, "volume", "ls", "-q") == volumes[0]
    assert champion_version(student.url("mlflow")).status_code == 200


def deployment_names(student: Student) -> list[str]:
    """The deployments the project's Prefect server holds."""
    listed = prefect_post(f"{student.url('prefect')}/api/deployments/filter", {}).json()
    return sorted(deployment["name"] for deployment in listed)


def down_v_leaves_no_container_volume_or_port(student: Student) -> None:
    student.run(f"{student.answers.stack} down -v")
    assert compose_objects(student, "ps", "-aq") == []
    assert compose_objects(student, "volume", "ls", "-q") == []
    assert not any(listening(port) for port in student.ports.values())


def guide_commands(guide: Path) -> list[str]:
    """Every line of the guide's ```bash blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", guide.read_text(), flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def every_command_of_the_guide_was_run(student: Student) -> None:
    commands = guide_commands(student.project / GUIDE)
    assert len(commands) >= 10, commands
    assert not [command for command in commands if command not in student.ran]


# --- What a browser shows: headless Chromium on the published ports -----------------------


def browse(url: str, *options: str) -> subprocess.CompletedProcess:
    """Open ``url`` in headless Chromium and let its scripts and API calls run.

    40 s of virtual time: the UIs load their lists with several rounds of API calls.
    """
    command = [
        "chromium",
        "--headless",
        "--no-sandbox",  # tests run as root, where Chromium's sandbox refuses to start
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1400,860",
        "--virtual-time-budget=40000",
        "--run-all-compositor-stages-before-draw",
        *options,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def page_shows(url: str, screenshot: Path, *texts: str) -> None:
    """The page, once its scripts ran, contains every text; a screenshot is kept."""
    page = browse(url, "--dump-dom").stdout
    missing = [text for text in texts if text not in page]
    assert not missing, f"{url} does not show {missing}:\n{page[-2000:]}"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    browse(url, f"--screenshot={screenshot}")
    assert screenshot.stat().st_size > 10_000, f"{screenshot} is (nearly) blank"


def chromium() -> str:
    if not (found := subprocess.run(["which", "chromium"], capture_output=True, text=True).stdout):
        unavailable("no `chromium` (Debian's chromium package) for the browser check")
    return found.strip()


def the_uis_show_the_runs_in_a_browser(student: Student) -> None:
    """MLflow lists the runs, Prefect its deployment and runs, Dagster the asset graph."""
    chromium()
    experiments = mlflow_api(
        student.url("mlflow"), "experiments/get-by-name", experiment_name=EXPERIMENT
    )
    experiment_id = experiments.json()["experiment"]["experiment_id"]
    champion_run = champion_version(student.url("mlflow")).json()["model_version"]["run_id"]
    champion = mlflow_api(student.url("mlflow"), "runs/get", run_id=champion_run).json()
    page_shows(
        f"{student.url('mlflow')}/#/experiments/{experiment_id}/runs",
        SCREENSHOTS / "docker-mlflow.png",
        EXPERIMENT,
        champion["run"]["info"]["run_name"],
    )
    flow_run = student.facts["prefect_run"]
    page_shows(  # the UI calls the API at PREFECT_UI_API_URL: a wrong one shows no runs
        f"{student.url('prefect')}/deployments/deployment/{student.facts['deployment_id']}",
        SCREENSHOTS / "docker-prefect.png",
        DEPLOYMENT,
        flow_run["name"],
    )
    page_shows(
        f"{student.url('dagster')}/locations/churn_pipeline/asset-groups/churn_training",
        SCREENSHOTS / "docker-dagster.png",
        "raw_customer_data",
        "best_model",
    )


# --- One student's session per orchestrator answer ----------------------------------------


class TestBothOrchestratorsWithTheFrenchGuide:
    answers = Answers("Atelier Docker", "both", "fr")
    # The workshop README's quick start: `up -d`, then the parts from the host, no data step.
    skips_the_data_step = True

    def test_the_stack_comes_up_healthy_on_the_moved_ports(self, student: Student):
        stack_comes_up_healthy_on_the_moved_ports(student)

    def test_host_deploy_and_parts_run_against_the_containers(self, student: Student):
        host_deploy_and_parts_run_against_the_containers(student)

    def test_the_first_deploy_wrote_the_data_that_make_data_writes(self, student: Student):
        the_first_deploy_wrote_the_data_that_make_data_writes(student)

    def test_the_container_worker_runs_the_host_deployment(self, student: Student):
        container_worker_runs_the_host_deployment(student)

    def test_a_drifted_batch_alerts_and_retrains_in_the_containers(self, student: Student):
        monitoring_in_the_containers(student)

    def test_the_dagster_bonus_schedule_fires_in_the_containers(self, student: Student):
        dagster_schedule_fires_in_the_containers(student)

    def test_the_uis_show_the_runs_in_a_browser(self, student: Student):
        the_uis_show_the_runs_in_a_browser(student)

    def test_everyday_commands(self, student: Student):
        everyday_commands(student)

    def test_down_rebuild_up_keeps_runs_models_deployments_and_schedules(self, student: Student):
        down_rebuild_up_keeps_everything(student)

    def test_down_v_leaves_no_container_volume_or_port(self, student: Student):
        down_v_leaves_no_container_volume_or_port(student)

    def test_every_command_of_the_guide_was_run(self, student: Student):
        every_command_of_the_guide_was_run(student)


class TestPrefectOnlyWithTheEnglishGuide:
    answers = Answers("Prefect Docker", "prefect", "en")

    def test_the_stack_comes_up_healthy_on_the_moved_ports(self, student: Student):
        stack_comes_up_healthy_on_the_moved_ports(student)

    def test_host_deploy_and_parts_run_against_the_containers(self, student: Student):
        host_deploy_and_parts_run_against_the_containers(student)

    def test_the_container_worker_runs_the_host_deployment(self, student: Student):
        container_worker_runs_the_host_deployment(student)

    def test_a_drifted_batch_alerts_and_retrains_in_the_containers(self, student: Student):
        monitoring_in_the_containers(student)

    def test_a_killed_worker_crashes_its_run_and_the_restarted_one_runs_the_next(
        self, student: Student, record_property
    ):
        a_killed_worker_crashes_its_run_and_the_restarted_one_runs_the_next(
            student, record_property
        )

    def test_a_second_project_beside_it_shares_nothing(
        self, student: Student, render_project, tmp_path_factory
    ):
        a_second_project_beside_it_shares_nothing(student, render_project, tmp_path_factory)

    def test_everyday_commands(self, student: Student):
        everyday_commands(student)

    def test_down_rebuild_up_keeps_runs_models_and_deployments(self, student: Student):
        down_rebuild_up_keeps_everything(student)

    def test_down_v_leaves_no_container_volume_or_port(self, student: Student):
        down_v_leaves_no_container_volume_or_port(student)

    def test_every_command_of_the_guide_was_run(self, student: Student):
        every_command_of_the_guide_was_run(student)


class TestDagsterOnlyWithTheEnglishGuide:
    answers = Answers("Dagster Docker", "dagster", "en")

    def test_the_stack_comes_up_healthy_on_the_moved_ports(self, student: Student):
        stack_comes_up_healthy_on_the_moved_ports(student)

    def test_the_dagster_schedule_fires_in_the_containers(self, student: Student):
        dagster_schedule_fires_in_the_containers(student)

    def test_everyday_commands(self, student: Student):
        everyday_commands(student)

    def test_down_rebuild_up_keeps_runs_models_and_schedules(self, student: Student):
        down_rebuild_up_keeps_everything(student)

    def test_down_v_leaves_no_container_volume_or_port(self, student: Student):
        down_v_leaves_no_container_volume_or_port(student)

    def test_every_command_of_the_guide_was_run(self, student: Student):
        every_command_of_the_guide_was_run(student)
