"""The classroom server, as a teacher starts it and a class uses it, on a real Docker engine.

One project with both orchestrators. The teacher runs `make classroom-up` (PostgreSQL,
SeaweedFS, MLflow with logins, Prefect with the class's credential, Dagster on PostgreSQL
behind its password) and `make classroom-users`, and hands out the logins. Students work
on the server with nothing but their handout in .env: their runs, models and artifacts
land in their own experiment and in the bucket, others can read but not write them, and
the board shows who has a champion. A class worker, started with the workers' handout,
runs two students' schedules, each into their own experiment; what needs a student's own
files (the exercise's schedule, monitoring of the batches on their machine) runs on a
worker the student's script starts on their machine, and the Dagster exercise on the
Dagster their `make dev` starts there. PostgreSQL restarted mid-class loses nothing and the
schedules go on, and no secret shows in a log, a run's parameters or a file git would
commit.

The tests run in order on one server (started once for the module, removed at the end).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from helpers import (
    CANDIDATES,
    DAGSTER_FINAL_STATUSES,
    DAGSTER_RUN_STATUS,
    DAGSTER_SOLUTION,
    EXPERIMENT,
    PREFECT_FINAL_STATES,
    Deadline,
    DevStack,
    ProjectEnv,
    assert_check_report,
    dagster_exercise_report,
    dagster_graphql,
    dagster_location_loaded,
    env_file_values,
    finished_candidates,
    free_port,
    materialize_the_solved_exercise,
    messages,
    prefect_call,
    remove_compose_project,
    sentence_pattern,
    succeeded,
    wait_for_output,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.xdist_group("classroom")]

STUDENTS = ("alice", "bob")
# The Compose projects of the classroom's two files: the server, and a class worker.
STACKS = ("classroom-demo-classroom", "classroom-demo-worker")
PACKAGE = "classroom_demo"  # the project is "Classroom Demo"
SOLUTION = "pipelines/workshop/prefect/Prefect_Exercises_solution.py"
BRIDGE_INTERFACE = '{{index .Options "com.docker.network.bridge.name"}}'
TRAINING_FLOW = "churn-training-pipeline"
SERVICES = {
    "postgres",
    "s3",
    "mlflow",
    "prefect-server",
    "dagster-code",
    "dagster-webserver",
    "dagster-daemon",
    "dagster-proxy",
}
PORTS = ("mlflow", "prefect", "dagster", "postgres", "dagster_code")
NOT_SECRET = {"CLASSROOM_HOST", "CLASSROOM_BIND", "DAGSTER_CODE_MACHINES"} | {
    f"{name.upper()}_PORT" for name in PORTS
}
CLASS_PIPELINE = "churn_pipeline"
LAUNCH_JOB = """
mutation($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
ALL_RUNS = "{ runsOrError { ... on Runs { results { runId } } } }"
RUN_FAILURES = """
query($id: ID!) {
  logsForRun(runId: $id) {
    ... on EventConnection {
      events {
        __typename
        ... on ExecutionStepFailureEvent { stepKey error { message cause { message } } }
      }
    }
  }
}
"""


@dataclass
class Classroom:
    """The teacher's project on the server machine, and what the teacher handed out."""

    project: Path
    host: ProjectEnv
    base_image: str
    address: str  # CLASSROOM_HOST: the server's address, as students and workers reach it
    ports: dict[str, int] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    @property
    def compose(self) -> str:
        return "docker compose --file classroom/compose.yml --env-file classroom/.env"

    @property
    def worker(self) -> str:
        return "docker compose --file classroom/worker.yml"

    def run(self, command: str, timeout: float = 900, check: bool = True) -> str:
        """One command at the project's root, as the teacher or a student types it."""
        result = subprocess.run(
            ["bash", "-c", command],
            cwd=self.project,
            env=self.host.environ(self.project, BASE_IMAGE=self.base_image),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            succeeded(result)
        self.outputs.append(result.stdout + result.stderr)
        return result.stdout + result.stderr

    def url(self, service: str) -> str:
        return f"http://{self.address}:{self.ports[service]}"

    @property
    def server_env(self) -> dict[str, str]:
        return env_file_values(self.project / "classroom" / ".env")

    @property
    def secrets(self) -> dict[str, str]:
        return {k: v for k, v in self.server_env.items() if k not in NOT_SECRET}

    def login(self, student: str) -> dict[str, str]:
        return env_file_values(self.project / "classroom" / "handouts" / f"{student}.env")

    def as_student(self, student: str) -> None:
        """The student's .env is their handout, as the guide says."""
        handout = self.project / "classroom" / "handouts" / f"{student}.env"
        (self.project / ".env").write_text(handout.read_text())

    def teacher(self) -> tuple[str, str]:
        return "teacher", self.server_env["MLFLOW_ADMIN_PASSWORD"]

    @property
    def prefect_credential(self) -> tuple[str, str]:
        user, password = self.server_env["PREFECT_AUTH_STRING"].split(":", 1)
        return user, password

    def prefect(self, method: str, path: str, **body) -> dict | list:
        """One Prefect API call with the class's credential."""
        url = f"{self.url('prefect')}/api/{path}"
        answer = prefect_call(method, url, auth=self.prefect_credential, json=body)
        return answer.json()

    def psql(self, database: str, query: str) -> str:
        return self.run(
            f"{self.compose} exec -T postgres psql --host=/tmp --username=postgres "
            f'--dbname={database} --tuples-only --no-align --command="{query}"'
        ).strip()


def bridge_address() -> str:
    """This machine's address on Docker's default network: containers reach the server
    there as another machine would, while nothing listens beyond this machine.

    Read from the bridge's interface: the network's IPAM gateway is not always recorded
    (an engine started on an existing docker0 leaves it out)."""
    name = subprocess.run(
        ["docker", "network", "inspect", "bridge", "--format", BRIDGE_INTERFACE],
        capture_output=True,
        text=True,
    )
    succeeded(name)
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", name.stdout.strip()],
        capture_output=True,
        text=True,
    )
    succeeded(shown)
    address = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", shown.stdout)
    assert address, f"no IPv4 address on Docker's bridge:\n{shown.stdout}"
    return address.group(1)


@pytest.fixture(scope="module")
def classroom(render_project, project_env_for, base_image: str) -> Iterator[Classroom]:
    """`make classroom-up` on Docker's bridge address, from the project's image built here."""
    project = render_project(
        "classroom", project_name="Classroom Demo", orchestrator="both", include_solutions=True
    )
    room = Classroom(project, project_env_for(project), base_image, bridge_address())
    room.ports = {service: free_port() for service in PORTS}
    (project / "classroom" / ".env").write_text(
        f"CLASSROOM_HOST={room.address}\nCLASSROOM_BIND={room.address}\n"
        + "".join(f"{name.upper()}_PORT={port}\n" for name, port in room.ports.items())
    )
    try:
        for stack in STACKS:  # what an interrupted run left, with its old passwords
            remove_compose_project(stack)
        try:
            room.run("make classroom-up", timeout=1500)
        except AssertionError as failure:  # what the stack shows goes with the failure
            state = room.run(f"{room.compose} ps -a", check=False)
            state += room.run(f"{room.compose} logs --tail=40 --no-color", check=False)
            raise AssertionError(f"{failure}\n--- the stack ---\n{state[-8000:]}") from None
        yield room
    finally:
        room.run(f"{room.worker} down --remove-orphans", check=False)
        room.run("docker volume rm --force classroom-demo-class-worker", check=False)
        room.run(f"{room.compose} down -v --remove-orphans", check=False)


def mlflow_as(room: Classroom, auth: tuple[str, str] | None, method: str, path: str, **body):
    """One MLflow REST call with a login (or none)."""
    url = f"{room.url('mlflow')}/api/2.0/mlflow/{path}"
    if method == "GET":
        return requests.get(url, params=body, auth=auth, timeout=30)
    return requests.post(url, json=body, auth=auth, timeout=30)


def experiment_id(room: Classroom, name: str) -> str:
    found = mlflow_as(room, room.teacher(), "GET", "experiments/get-by-name", experiment_name=name)
    return found.json()["experiment"]["experiment_id"]


def student_auth(room: Classroom, student: str) -> tuple[str, str]:
    login = room.login(student)
    return login["MLFLOW_TRACKING_USERNAME"], login["MLFLOW_TRACKING_PASSWORD"]


def test_the_server_comes_up_healthy_with_secrets_only_in_its_env_file(classroom: Classroom):
    listed = classroom.run(f"{classroom.compose} ps --format json")
    health = {row["Service"]: row["Health"] for row in map(json.loads, listed.splitlines())}
    assert set(health) == SERVICES
    assert {service for service, state in health.items() if state not in {"healthy", ""}} == set()
    env_file = classroom.project / "classroom" / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert len(classroom.secrets) >= 10
    printed = "\n".join(classroom.outputs)
    assert [name for name, value in classroom.secrets.items() if value in printed] == []
    # git would commit none of the server's secrets or logins
    classroom.run("git init -q && git add --all --dry-run > .git/would-add")
    would_add = (classroom.project / ".git" / "would-add").read_text()
    assert "classroom/.env" not in would_add
    assert "classroom/compose.yml" in would_add


def test_make_classroom_users_hands_out_one_login_each(classroom: Classroom, tmp_path: Path):
    names = tmp_path / "students.txt"
    names.write_text("alice\n")
    classroom.run(f"make classroom-users NAMES={names}")
    first = classroom.login("alice")
    names.write_text("\n".join(STUDENTS) + "\n")
    output = classroom.run(f"make classroom-users NAMES={names}")
    assert sentence_pattern(messages(classroom.project)["classroom"]["logins_created"]).search(
        output
    ), output
    assert classroom.login("alice") == first  # a second run keeps the logins handed out
    logins = (classroom.project / "classroom" / "logins.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in logins] == ["login", *STUDENTS]
    for student in STUDENTS:
        handout = classroom.project / "classroom" / "handouts" / f"{student}.env"
        assert stat.S_IMODE(handout.stat().st_mode) == 0o600
        login = classroom.login(student)
        assert login["MLFLOW_TRACKING_URI"] == classroom.url("mlflow")
        assert login["MLFLOW_EXPERIMENT_NAME"].endswith(f"-{student}")
        assert login["PREFECT_API_AUTH_STRING"] == classroom.server_env["PREFECT_AUTH_STRING"]


def test_a_login_the_server_has_but_the_list_lost_is_one_line(classroom: Classroom, tmp_path):
    """logins.csv deleted: asking for alice again names her, and writes no half list."""
    logins = classroom.project / "classroom" / "logins.csv"
    kept = logins.read_text()
    logins.unlink()
    names = tmp_path / "again.txt"
    names.write_text("alice\n")
    try:
        output = classroom.run(f"make classroom-users NAMES={names}", check=False)
        assert not logins.exists() and not logins.with_suffix(".new").exists()
    finally:
        logins.write_text(kept)
    exists = messages(classroom.project)["classroom"]["login_exists"]
    assert sentence_pattern(exists).search(output), output
    assert "Traceback" not in output, output


def test_mlflow_asks_for_a_login_and_keeps_each_student_to_their_experiment(
    classroom: Classroom,
):
    alice, bob = (student_auth(classroom, student) for student in STUDENTS)
    alices = experiment_id(classroom, classroom.login("alice")["MLFLOW_EXPERIMENT_NAME"])
    assert mlflow_as(classroom, None, "GET", "experiments/search", max_results=1).status_code == 401
    wrong = (alice[0], "not-the-password")
    assert (
        mlflow_as(classroom, wrong, "GET", "experiments/search", max_results=1).status_code == 401
    )
    assert mlflow_as(classroom, bob, "POST", "runs/create", experiment_id=alices).status_code == 403
    assert mlflow_as(classroom, bob, "GET", "experiments/get", experiment_id=alices).ok
    created = mlflow_as(classroom, alice, "POST", "runs/create", experiment_id=alices)
    assert created.status_code == 200, created.text
    seen = mlflow_as(classroom, classroom.teacher(), "GET", "experiments/search", max_results=50)
    names = {experiment["name"] for experiment in seen.json()["experiments"]}
    assert {classroom.login(s)["MLFLOW_EXPERIMENT_NAME"] for s in STUDENTS} <= names


def test_a_student_trains_on_the_server_and_the_artifacts_land_in_the_bucket(
    classroom: Classroom,
):
    classroom.as_student("alice")
    output = classroom.run("make train", timeout=600)
    login = classroom.login("alice")
    new_champion = messages(classroom.project)["tracking"]["new_champion"]
    assert sentence_pattern(new_champion).search(output), output
    champion = mlflow_as(
        classroom,
        student_auth(classroom, "alice"),
        "GET",
        "registered-models/alias",
        name=login["MLFLOW_MODEL_NAME"],
        alias="champion",
    )
    assert champion.ok, champion.text
    run_id = champion.json()["model_version"]["run_id"]
    # The student's environment has no S3 client and no keys: the server proxied it all.
    assert "AWS_ACCESS_KEY_ID" not in classroom.host.environ(classroom.project)
    probe = "import importlib.util as u; print(u.find_spec('boto3') is None)"
    assert classroom.run(f'python -c "{probe}"').strip() == "True"
    listing = (
        "import boto3; s3 = boto3.client('s3', endpoint_url='http://s3:8333'); "
        "pages = s3.get_paginator('list_objects_v2').paginate(Bucket='mlflow'); "
        "print('\\n'.join(o['Key'] for p in pages for o in p.get('Contents', [])))"
    )
    keys = classroom.run(f'{classroom.compose} exec -T mlflow python -c "{listing}"').split()
    assert [key for key in keys if f"/{run_id}/" in key], keys[:20]


def test_a_refused_login_is_one_line(classroom: Classroom):
    dotenv = classroom.project / ".env"
    handout = dotenv.read_text()
    wrong = re.sub(r"^(MLFLOW_TRACKING_PASSWORD)=.*$", r"\1=wrong", handout, flags=re.M)
    dotenv.write_text(wrong)
    try:
        result = subprocess.run(
            ["make", "train"],
            cwd=classroom.project,
            env=classroom.host.environ(classroom.project),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        dotenv.write_text(handout)
    assert result.returncode != 0
    refused = messages(classroom.project)["tracking"]["login_refused"]
    assert sentence_pattern(refused).search(result.stderr), result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_prefect_asks_for_the_class_credential(classroom: Classroom):
    api = f"{classroom.url('prefect')}/api"
    assert requests.get(f"{api}/health", timeout=10).ok  # the health check stays open
    assert requests.post(f"{api}/flow_runs/filter", json={}, timeout=10).status_code == 401
    classroom.as_student("alice")
    dotenv = classroom.project / ".env"
    handout = dotenv.read_text()
    dotenv.write_text(re.sub(r"^PREFECT_API_AUTH_STRING=.*\n", "", handout, flags=re.M))
    try:
        refused = classroom.run("make prefect PART=part1", timeout=300, check=False)
    finally:
        dotenv.write_text(handout)
    sentence = messages(classroom.project)["prefect"]["credential_refused"]
    assert sentence_pattern(sentence).search(refused), refused
    assert "Traceback" not in refused, refused
    classroom.run("make prefect PART=part1", timeout=600)
    states = [run["state_type"] for run in classroom.prefect("POST", "flow_runs/filter")]
    assert states and set(states) == {"COMPLETED"}, states


def test_dagster_asks_for_the_class_password(classroom: Classroom):
    ui = classroom.url("dagster")
    assert requests.get(f"{ui}/server_info", timeout=10).status_code == 401
    assert requests.get(f"{ui}/server_info", auth=dagster_auth(classroom), timeout=10).ok


def dagster_auth(room: Classroom) -> tuple[str, str]:
    return "class", room.server_env["DAGSTER_UI_PASSWORD"]


def launch_training(room: Classroom, location: str) -> str:
    """The reference pipeline's training job, launched in ``location`` as the UI does."""
    selector = {
        "repositoryLocationName": location,
        "repositoryName": "__repository__",
        "jobName": "churn_training_job",
    }
    launched = dagster_graphql(
        room.url("dagster"), LAUNCH_JOB, auth=dagster_auth(room), params={"selector": selector}
    )
    result = launched["launchPipelineExecution"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def dagster_run_ended(room: Classroom, run_id: str) -> str:
    """The run's final status, once it has one; a failed run's step errors go with it."""
    ui, auth = room.url("dagster"), dagster_auth(room)

    def finished() -> str | None:
        found = dagster_graphql(ui, DAGSTER_RUN_STATUS, auth=auth, runId=run_id)
        status = found["runOrError"]["status"]
        return status if status in DAGSTER_FINAL_STATUSES else None

    status = wait_until(finished, timeout=420, message=f"the Dagster run {run_id} did not finish")
    if status != "SUCCESS":
        events = dagster_graphql(ui, RUN_FAILURES, auth=auth, id=run_id)["logsForRun"]["events"]
        raise AssertionError([event for event in events if event.get("error")])
    return status


def test_the_board_shows_each_students_champion(classroom: Classroom):
    """Printed for the teacher, and published in MLflow, where a student's login reads it."""
    board = classroom.run("make classroom-board")
    rows = {line.split()[0]: line.split()[1:] for line in board.splitlines()[1:] if line.strip()}
    assert rows["alice"][0] == "v1", board
    assert float(rows["alice"][1]) > 0
    assert rows["bob"][:2] == ["-", "-"], board
    bob = student_auth(classroom, "bob")
    board_experiment = experiment_id(classroom, "class-board")
    runs = mlflow_as(classroom, bob, "POST", "runs/search", experiment_ids=[board_experiment])
    latest = runs.json()["runs"][0]["info"]["run_id"]
    page = requests.get(
        f"{classroom.url('mlflow')}/get-artifact",
        params={"path": "board.html", "run_uuid": latest},
        auth=bob,
        timeout=30,
    )
    assert page.ok, page.text
    cells = re.findall(r"<td>([^<]*)</td>", page.content.decode("utf-8"))
    assert cells[:3] == ["alice", "v1", rows["alice"][1]], cells


def start_deploying(
    project: Path, env: ProjectEnv, log: Path, command: tuple[str, ...] = ("make", "prefect-deploy")
) -> subprocess.Popen:
    """A deploy command in the background, as a student leaves it running."""
    with log.open("w") as output:
        return subprocess.Popen(
            command,
            cwd=project,
            env=env.environ(project),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_each_students_schedule_runs_on_the_class_worker_into_their_experiment(
    classroom: Classroom, render_project, tmp_path: Path
):
    """The teacher starts a worker with the workers' handout (on the server's machine here;
    any machine with Docker does). Alice and bob deploy from their own projects, every
    minute: both runs of the same minute execute, each in a container the worker starts,
    and land in their own experiment and model, and nowhere else, with nothing secret in
    Prefect."""
    handouts = classroom.project / "classroom" / "handouts"
    shutil.copy(handouts / "class-worker.env", classroom.project / "classroom" / "worker.env")
    classroom.run("make classroom-worker", timeout=900)
    bobs = render_project("classroom-bob", project_name="Classroom Demo", orchestrator="both")
    projects = {"alice": classroom.project, "bob": bobs}

    def deploy_log(student: str) -> Path:
        return tmp_path / f"{student}-deploy.log"

    watching = messages(classroom.project)["prefect"]["deploy"]["watching"]
    deployers = {}
    for student, project in projects.items():  # both at once, as in a class
        handout = (handouts / f"{student}.env").read_text()
        (project / ".env").write_text(handout + "SCHEDULE_CRON=* * * * *\n")
        deployers[student] = start_deploying(project, classroom.host, deploy_log(student))
    for student, deployer in deployers.items():
        wait_for_output(
            deployer, deploy_log(student), watching, Deadline.DEPLOYED, f"{student} deploy"
        )
    deployments = {
        student: classroom.prefect(
            "GET", f"deployments/name/{TRAINING_FLOW}/scheduled-training-{student}"
        )
        for student in STUDENTS
    }

    def ended_runs(deployment: dict) -> dict[str, dict]:
        """The deployment's runs that have ended, by the cron tick they were scheduled for."""
        runs = classroom.prefect(
            "POST", "flow_runs/filter", deployments={"id": {"any_": [deployment["id"]]}}
        )
        return {
            run["expected_start_time"]: run
            for run in runs
            if run["auto_scheduled"] and run["state_type"] in PREFECT_FINAL_STATES
        }

    def one_tick_for_both() -> dict[str, dict] | None:
        """The runs of the first tick both schedules share, once both have ended (bob may
        have deployed a minute after alice, on a loaded machine)."""
        ended = {student: ended_runs(deployment) for student, deployment in deployments.items()}
        shared = set.intersection(*(set(ticks) for ticks in ended.values()))
        return {student: ended[student][min(shared)] for student in STUDENTS} if shared else None

    runs = wait_until(
        one_tick_for_both,
        Deadline.SCHEDULE_LAUNCH + Deadline.SCHEDULED_RUN,
        "the students' schedules never ran one tick on the class worker",
        interval=3,
    )
    paused = sentence_pattern(messages(classroom.project)["prefect"]["schedule"]["paused"])
    for student, deployer in deployers.items():
        os.killpg(deployer.pid, signal.SIGINT)  # Ctrl+C, to make and the script it runs
        deployer.wait(timeout=Deadline.STOPPED)
        said = deploy_log(student).read_text()
        assert paused.search(said) and "Traceback" not in said, said[-3000:]
    assert {student: run["state_type"] for student, run in runs.items()} == {
        student: "COMPLETED" for student in STUDENTS
    }, classroom.run(f"{classroom.worker} logs --tail=60", check=False)
    containers = {run["infrastructure_pid"] for run in runs.values()}
    assert len(containers) == len(STUDENTS) and None not in containers, runs  # one each
    experiments = {
        student: experiment_id(classroom, classroom.login(student)["MLFLOW_EXPERIMENT_NAME"])
        for student in STUDENTS
    }
    for student, run in runs.items():
        assert classroom.prefect("GET", f"deployments/{deployments[student]['id']}")["paused"]
        found = mlflow_as(
            classroom,
            classroom.teacher(),
            "POST",
            "runs/search",
            experiment_ids=list(experiments.values()),
            filter=f"tags.prefect_flow_run_id = '{run['id']}'",
        ).json()["runs"]
        assert {r["info"]["experiment_id"] for r in found} == {experiments[student]}
        finished = finished_candidates(found)
        assert finished == CANDIDATES, found
        model = classroom.login(student)["MLFLOW_MODEL_NAME"]
        versions = mlflow_as(
            classroom,
            classroom.teacher(),
            "GET",
            "model-versions/search",
            filter=f"name = '{model}'",
        ).json()["model_versions"]
        registered = {version["run_id"] for version in versions}
        assert registered & {r["info"]["run_id"] for r in found}, versions
    for deployment in deployments.values():  # models load through MLflow, not from s3:8333
        assert (
            deployment["job_variables"]["env"]["MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD"] == "false"
        )
    stored = json.dumps(list(deployments.values()))
    secrets = classroom.secrets | {s: student_auth(classroom, s)[1] for s in STUDENTS}
    assert [name for name, value in secrets.items() if value in stored] == []


def test_a_code_server_on_another_machine_runs_the_runs_of_its_location(classroom: Classroom):
    """`make classroom-worker` started a Dagster code server beside the Prefect worker (on
    the server's machine here, reached at its address as another machine would be). The
    teacher names that machine in DAGSTER_CODE_MACHINES and runs `make classroom-up` again:
    the class's Dagster shows its location, and a run launched there executes on that
    machine (it logs to MLflow with the workers' login) while one of the server's location
    runs at the same time, both recorded in PostgreSQL."""
    machine = f"{classroom.address}:{classroom.ports['dagster_code']}"
    location = f"{CLASS_PIPELINE}_{machine.replace('.', '_').replace(':', '_')}"
    with (classroom.project / "classroom" / ".env").open("a") as server_env:
        server_env.write(f"DAGSTER_CODE_MACHINES={machine}\n")
    classroom.run("make classroom-up", timeout=900)

    def loaded() -> bool:
        return dagster_location_loaded(classroom.url("dagster"), location, dagster_auth(classroom))

    wait_until(loaded, timeout=Deadline.SERVER_UP, message=f"{location} never loaded")
    runs = {name: launch_training(classroom, name) for name in (CLASS_PIPELINE, location)}
    for run_id in runs.values():
        assert dagster_run_ended(classroom, run_id) == "SUCCESS"
        stored = classroom.psql("dagster", f"SELECT status FROM runs WHERE run_id = '{run_id}'")
        assert stored == "SUCCESS"
    pipeline = experiment_id(classroom, EXPERIMENT)
    for name, login in ((CLASS_PIPELINE, "teacher"), (location, "class-worker")):
        found = mlflow_as(
            classroom,
            classroom.teacher(),
            "POST",
            "runs/search",
            experiment_ids=[pipeline],
            filter=f"tags.dagster_run_id = '{runs[name]}'",
        ).json()["runs"]
        finished = finished_candidates(found)
        assert finished == CANDIDATES, (name, found)
        assert {run["info"]["user_id"] for run in found} == {login}, (name, found)


def test_what_needs_a_students_files_runs_on_their_own_machine(
    classroom: Classroom, tmp_path: Path
):
    """Two of alice's deployments need her own files: step 5 of the Prefect exercises (her
    exercise file) and part 8's monitoring (the batches that reach her machine). The class's
    workers run the class's image, so both go to a pool of her own, served by a worker that
    each script starts on her machine while it watches. Her check finds her deployment by
    its name (bob's file has the same entrypoint), the scheduled runs log under her own
    login, and Ctrl+C leaves no worker behind."""
    classroom.as_student("alice")
    with (classroom.project / ".env").open("a") as env:
        env.write("SCHEDULE_CRON=* * * * *\nMONITORING_CRON=* * * * *\n")
    classroom.run("make batch")  # after the class's image was built: only alice has it
    catalog = messages(classroom.project)
    step5 = catalog["exercises"]["prefect"]["step5"]
    python = str(classroom.host.python)
    logs = {"exercise": tmp_path / "step5.log", "monitoring": tmp_path / "monitor-deploy.log"}
    watchers = {
        "exercise": start_deploying(
            classroom.project, classroom.host, logs["exercise"], (python, SOLUTION, "step5")
        ),
        "monitoring": start_deploying(
            classroom.project,
            classroom.host,
            logs["monitoring"],
            ("make", "prefect-monitor-deploy"),
        ),
    }
    deployed = {
        "exercise": step5["deployed"].split("{")[0],
        "monitoring": catalog["prefect"]["deploy"]["watching"],
    }
    names = {
        "exercise": "training-pipeline/prefect-exercises-solution-alice",
        "monitoring": "churn-batch-monitoring/batch-monitoring-alice",
    }
    try:
        for what, watcher in watchers.items():
            wait_for_output(watcher, logs[what], deployed[what], Deadline.DEPLOYED, what)
        deployments = {
            what: classroom.prefect("GET", f"deployments/name/{name}")
            for what, name in names.items()
        }
        assert {d["work_pool_name"] for d in deployments.values()} == {"alice-pool"}

        def completed_scheduled_runs() -> dict[str, dict] | None:
            completed = {}
            for what, deployment in deployments.items():
                runs = classroom.prefect(
                    "POST", "flow_runs/filter", deployments={"id": {"any_": [deployment["id"]]}}
                )
                done = [r for r in runs if r["auto_scheduled"] and r["state_type"] == "COMPLETED"]
                if not done:
                    return None
                completed[what] = done[0]
            return completed

        flow_runs = wait_until(
            completed_scheduled_runs,
            Deadline.SCHEDULE_LAUNCH + Deadline.SCHEDULED_RUN,
            "alice's exercise and monitoring schedules never both completed a run on her machine",
            interval=3,
        )
        check = classroom.host.run(
            [python, SOLUTION, "check", "step5"], classroom.project, check=False
        )
        points = ["deployed", "cron", "typed", "scheduled"]
        assert_check_report(check, [("✓", step5[f"{point}_ok"]) for point in points])
    finally:
        for watcher in watchers.values():
            os.killpg(watcher.pid, signal.SIGINT)  # Ctrl+C
        for watcher in watchers.values():
            watcher.wait(timeout=Deadline.STOPPED)
    this_machine = sentence_pattern(catalog["prefect"]["workers"]["this_machine"])
    paused = sentence_pattern(catalog["prefect"]["schedule"]["paused"])
    for what, log in logs.items():
        said = log.read_text()
        assert this_machine.search(said) and paused.search(said), f"{what}:\n{said[-3000:]}"
        assert "Traceback" not in said, said[-3000:]
    assert not processes_with("--pool alice-pool"), "a script left its worker running"
    experiment = classroom.login("alice")["MLFLOW_EXPERIMENT_NAME"]
    for what, suffix in {"exercise": "-exercises", "monitoring": "-monitoring"}.items():
        started = datetime.fromisoformat(flow_runs[what]["start_time"]).timestamp()
        found = mlflow_as(
            classroom,
            classroom.teacher(),
            "POST",
            "runs/search",
            experiment_ids=[experiment_id(classroom, experiment + suffix)],
            filter=f"attributes.start_time >= {int(started * 1000)}",
        ).json()["runs"]
        assert found and {run["info"]["user_id"] for run in found} == {"alice"}, (what, found)


def test_the_dagster_exercise_runs_on_the_students_own_dagster(classroom: Classroom):
    """Her exercise file is on her machine: with her handout, `make dev` starts her own
    Dagster only (the class's server runs MLflow and Prefect), which loads her files. The
    solved exercise, materialized as the UI does, passes every point of its check, its
    candidates logged to the class's MLflow under her login."""
    classroom.as_student("alice")
    dagster_port = free_port()  # this machine serves the class too: a port of her own
    with (classroom.project / ".env").open("a") as env:
        env.write(f"DAGSTER_PORT={dagster_port}\n")
    said = messages(classroom.project)["devstack"]
    with DevStack(classroom.host, classroom.project, PACKAGE) as stack:
        output = stack.output()
        assert sentence_pattern(said["classroom"]).search(output), output
        starting = re.escape(said["starting"]).replace(re.escape("{service}"), r"(\S+)")
        started = set(re.findall(starting, output))
        assert started and all(name.startswith("dagster-") for name in started), started
        materialized_after = datetime.now(UTC)
        materialize_the_solved_exercise(f"http://127.0.0.1:{dagster_port}")
        check = classroom.host.run(
            [str(classroom.host.python), DAGSTER_SOLUTION, "check"], classroom.project, check=False
        )
        assert_check_report(check, dagster_exercise_report(classroom.project, "✓✓✓✓✓✓"))
    experiment = classroom.login("alice")["MLFLOW_EXPERIMENT_NAME"] + "-exercises"
    found = mlflow_as(
        classroom,
        classroom.teacher(),
        "POST",
        "runs/search",
        experiment_ids=[experiment_id(classroom, experiment)],
        filter=f"attributes.start_time >= {int(materialized_after.timestamp() * 1000)}",
    ).json()["runs"]
    finished = finished_candidates(found)
    assert finished == CANDIDATES, found
    assert {run["info"]["user_id"] for run in found} == {"alice"}, found


def processes_with(argument: str) -> list[str]:
    """The command lines of this machine's processes that hold ``argument``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it ended meanwhile
            continue
        if argument in line:
            found.append(line)
    return found


def prefect_flow_run_ids(classroom: Classroom) -> set[str] | None:
    """The server's flow runs, with the class's credential; None while it cannot answer."""
    api = f"{classroom.url('prefect')}/api"
    answer = requests.post(
        f"{api}/flow_runs/filter", json={}, auth=classroom.prefect_credential, timeout=10
    )
    return {run["id"] for run in answer.json()} if answer.ok else None


def mlflow_run_ids(classroom: Classroom, auth: tuple[str, str], experiment: str) -> set[str]:
    found = mlflow_as(classroom, auth, "POST", "runs/search", experiment_ids=[experiment])
    return {run["info"]["run_id"] for run in found.json()["runs"]}


def dagster_run_ids(classroom: Classroom) -> set[str]:
    auth = ("class", classroom.server_env["DAGSTER_UI_PASSWORD"])
    runs = dagster_graphql(classroom.url("dagster"), ALL_RUNS, auth=auth)["runsOrError"]
    return {run["runId"] for run in runs["results"]}


def test_postgresql_restarted_mid_class_loses_nothing(classroom: Classroom):
    """The servers reconnect by themselves; every run, flow run and Dagster run is still
    there, the next run is logged, and the next tick of alice's schedule (resumed) runs on
    the class worker."""
    alice = student_auth(classroom, "alice")
    alices = experiment_id(classroom, classroom.login("alice")["MLFLOW_EXPERIMENT_NAME"])
    runs, flow_runs = mlflow_run_ids(classroom, alice, alices), prefect_flow_run_ids(classroom)
    dagster_runs = dagster_run_ids(classroom)
    assert runs and flow_runs and dagster_runs
    classroom.run(f"{classroom.compose} restart postgres", timeout=300)

    def logged_again() -> str | None:
        created = mlflow_as(classroom, alice, "POST", "runs/create", experiment_id=alices)
        return created.json()["run"]["info"]["run_id"] if created.ok else None

    reconnected = "did not answer again after PostgreSQL restarted"
    new_run = wait_until(logged_again, timeout=120, message=f"MLflow {reconnected}")
    assert mlflow_run_ids(classroom, alice, alices) == runs | {new_run}
    answered = wait_until(
        lambda: prefect_flow_run_ids(classroom), timeout=120, message=f"Prefect {reconnected}"
    )
    assert answered == flow_runs
    assert (
        wait_until(lambda: dagster_run_ids(classroom), 120, f"Dagster {reconnected}")
        == dagster_runs
    )
    training = classroom.prefect(
        "GET", f"deployments/name/{TRAINING_FLOW}/scheduled-training-alice"
    )
    deployment = f"{classroom.url('prefect')}/api/deployments/{training['id']}"
    prefect_call("POST", f"{deployment}/resume_deployment", auth=classroom.prefect_credential)

    def next_run_ended() -> dict | None:
        runs = classroom.prefect(
            "POST", "flow_runs/filter", deployments={"id": {"any_": [training["id"]]}}
        )
        return next(
            (
                run
                for run in runs
                if run["id"] not in flow_runs and run["state_type"] in PREFECT_FINAL_STATES
            ),
            None,
        )

    try:
        run = wait_until(
            next_run_ended,
            Deadline.SCHEDULE_LAUNCH + Deadline.SCHEDULED_RUN,
            "no scheduled run ended after PostgreSQL restarted",
            interval=3,
        )
    finally:
        prefect_call("POST", f"{deployment}/pause_deployment", auth=classroom.prefect_credential)
    assert run["state_type"] == "COMPLETED", run["state"]


def test_no_secret_in_the_logs_or_in_the_runs(classroom: Classroom):
    logs = classroom.run(f"{classroom.compose} logs --no-color")
    logs += classroom.run(f"{classroom.worker} logs --no-color")  # the class worker's machine
    secrets = classroom.secrets | {s: student_auth(classroom, s)[1] for s in STUDENTS}
    assert [name for name, value in secrets.items() if value in logs] == []
    alice = student_auth(classroom, "alice")
    alices = experiment_id(classroom, classroom.login("alice")["MLFLOW_EXPERIMENT_NAME"])
    runs = mlflow_as(classroom, alice, "POST", "runs/search", experiment_ids=[alices]).json()
    recorded = json.dumps([run["data"] for run in runs["runs"]])
    assert [name for name, value in secrets.items() if value in recorded] == []
