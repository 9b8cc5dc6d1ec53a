"""Helpers shared by the template's tests: rendering, processes, ports, polling."""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TypeVar

import pytest
import requests
import yaml
from copier import run_copy

TEMPLATE_ROOT = Path(__file__).resolve().parents[1]
DEV_BIN = Path(sys.executable).parent  # the template's dev environment: ruff, uv, hadolint...
DEFAULT_PACKAGE = "churn_mlops_workshop"
# Python flags for the scripts students run: deprecations are errors, except the one MLflow
# raises inside its own `log_model` (pandas' range deprecation), which is not ours to fix.
STRICT_WARNINGS = [
    "-W",
    "error::DeprecationWarning",
    "-W",
    "ignore:Operation with range is deprecated",
]
EXPERIMENT = "churn-prediction"  # MLFLOW_EXPERIMENT_NAME's default in .env.example
MODEL_NAME = "churn-classifier"  # MLFLOW_MODEL_NAME's default
# The models a training run logs, one MLflow run each, by run name.
CANDIDATES = ["gradient_boosting", "logistic_regression", "random_forest"]
T = TypeVar("T")


class Deadline:
    """How long, in seconds, the end-to-end tests wait for each step: one value per step,
    whichever module waits, sized for a loaded 2-core machine (CI runs the modules side by
    side). Correctness never depends on them: a step done early ends the wait early."""

    SERVER_UP = 600  # a server, or Dagster's code locations, loaded after a (re)start
    DEPLOYED = 300  # a deploy script to its "Press Ctrl+C": imports, then the API's answers
    SCHEDULE_LAUNCH = 180  # a one-minute schedule's run picked up: two ticks and a poll
    SCHEDULED_RUN = 420  # a picked-up run ended: imports and training
    NOTIFIED = 90  # a run's hook posted to the webhook, after the run's final state
    STOPPED = 60  # a command stopped by Ctrl+C (or a server by SIGTERM)
    STACK_STOPPED = 150  # `make dev` stopped: its servers one after the other, clients first


def copier_choices(question: str) -> list:
    """The values ``question`` accepts, read from copier.yml: the tests' lists of
    orchestrators or Python versions are never retyped, so a new choice is tested."""
    questions = yaml.safe_load((TEMPLATE_ROOT / "copier.yml").read_text())
    choices = questions[question]["choices"]
    return list(choices.values()) if isinstance(choices, dict) else list(choices)


def copier_default(question: str) -> object:
    """The default answer of ``question`` in copier.yml (a plain value, not a template)."""
    return yaml.safe_load((TEMPLATE_ROOT / "copier.yml").read_text())[question]["default"]


class Facts(dict):
    """What a story's earlier steps found, for the later steps that build on it.

    A step that needs a fact no earlier step recorded (run alone with ``-k``, or after the
    step that records it failed) is skipped with that reason, not failed with a KeyError;
    under ``CI=true``, where the whole story runs, conftest turns the skip into a failure.
    """

    def __missing__(self, key: str) -> object:
        pytest.skip(f"needs {key!r}, which an earlier step of this story records: run it whole")


def snapshot_template(destination: Path) -> Path:
    """Copy the working tree (uncommitted changes included, ignored files excluded).

    Copier renders a plain folder as it is, whereas from a git repository it
    would render the newest tag and miss the work in progress.
    """
    git_files = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    listed = subprocess.run(git_files, cwd=TEMPLATE_ROOT, capture_output=True, text=True)
    listed.check_returncode()
    for relative in filter(None, listed.stdout.split("\0")):
        source = TEMPLATE_ROOT / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def render(template: Path, destination: Path, **answers: object) -> Path:
    """Render the template non-interactively, as `copier copy --trust --defaults` would."""
    run_copy(
        str(template),
        destination,
        data=answers,
        defaults=True,
        unsafe=True,
        quiet=True,
        vcs_ref=None,
    )
    return destination


def listening(port: int) -> bool:
    """Whether a server answers on ``port`` of this machine."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stack_env(*orchestrators: str) -> dict[str, str]:
    """Free ports for the dev stack's servers and the URLs its clients need.

    MLflow always; ``"prefect"`` and ``"dagster"`` add theirs. Every client of a
    Prefect server needs ``PREFECT_API_URL``, or it quietly starts its own server.
    """
    mlflow = free_port()
    env = {"MLFLOW_PORT": str(mlflow), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow}"}
    if "prefect" in orchestrators:
        prefect = free_port()
        env |= {"PREFECT_PORT": str(prefect), "PREFECT_API_URL": f"http://127.0.0.1:{prefect}/api"}
    if "dagster" in orchestrators:
        env["DAGSTER_PORT"] = str(free_port())
    return env


def wait_until(
    condition: Callable[[], T], timeout: float, message: str, interval: float = 0.5
) -> T:
    """Poll ``condition`` until it returns something truthy; at the deadline fail with ``message``.

    Returns the truthy value, so a test can wait for a thing and use it. An error the
    condition raises (a server still starting) is polled past and named at the deadline;
    a failed assertion is a wrong answer, not a slow one, and fails at once.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if result := condition():
                return result
        except AssertionError:
            raise
        except Exception as error:  # noqa: BLE001 - keep polling, report the last one
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"{message} (waited {timeout:.0f} s; last error: {last_error!r})")


def wait_for_output(
    process: subprocess.Popen, log: Path, text: str, timeout: float, what: str
) -> None:
    """Wait until a background command prints ``text`` in its ``log`` (a deploy script's
    "Press Ctrl+C"); a command that exits first fails at once, with the end of its log."""

    def printed() -> bool:
        output = log.read_text(errors="replace") if log.exists() else ""
        if text in output:
            return True
        assert process.poll() is None, (
            f"{what}: exited {process.returncode} before printing {text!r}:\n{output[-3000:]}"
        )
        return False

    wait_until(printed, timeout, f"{what}: {text!r} not printed; see {log}")


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


class ProjectEnv:
    """A virtual environment with a rendered project's dependencies, shared by the tests of
    every project that declares the same ones (see ``environment_key``).

    The project's code is not installed: commands run with ``PYTHONPATH=src`` from the
    project's folder, so projects with other names can share it.
    """

    def __init__(self, venv: Path):
        self.venv = venv
        self.bin = venv / "bin"
        self.python = self.bin / "python"

    def environ(self, project: Path, **extra: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PREFECT_", "MLFLOW_", "DAGSTER_", "PYENV_VERSION"))
        }
        env.update(
            PATH=f"{self.bin}{os.pathsep}{env.get('PATH', '')}",
            PYTHONPATH=str(project / "src"),
            VIRTUAL_ENV=str(self.venv),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def run(
        self,
        args: list[str],
        project: Path,
        timeout: float = 600,
        check: bool = True,
        **extra_env: str,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the project folder; on failure show its output."""
        result = subprocess.run(
            args,
            cwd=project,
            env=self.environ(project, **extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return succeeded(result) if check else result


def succeeded(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """The command exited 0; else fail showing the command and the end of its output."""
    command = result.args if isinstance(result.args, str) else " ".join(map(str, result.args))
    assert result.returncode == 0, (
        f"{command}\nexited {result.returncode}\n--- stdout ---\n{result.stdout[-4000:]}"
        f"\n--- stderr ---\n{result.stderr[-4000:]}"
    )
    return result


def remove_compose_project(name: str) -> None:
    """Remove what a Compose project left behind (its containers, then its volumes and
    networks), found by Compose's label: `docker compose down` needs the project's file and
    every variable it requires, which an interrupted run may not have left."""
    label = f"label=com.docker.compose.project={name}"
    for listing, removal in (
        (["ps", "--all", "--quiet"], ["rm", "--force"]),
        (["volume", "ls", "--quiet"], ["volume", "rm", "--force"]),
        (["network", "ls", "--quiet"], ["network", "rm"]),
    ):
        found = succeeded(
            subprocess.run(["docker", *listing, "--filter", label], capture_output=True, text=True)
        )
        if ids := found.stdout.split():
            succeeded(subprocess.run(["docker", *removal, *ids], capture_output=True, text=True))


def answered_python(project: Path) -> str:
    """The ``python_version`` the project's answers name: what its students run."""
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return str(answers["python_version"])


def python_interpreter(version: str) -> str:
    """The newest pyenv interpreter of ``version`` (``3.12``), else the version for uv to find.

    pyenv's shims answer only for the version selected where they run, and uv cannot
    download interpreters here, so the interpreter is named by its path.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = root.glob(f"versions/{version}.*/bin/python{version}")
    newest = max(found, key=lambda path: int(path.parts[-3].split(".")[2]), default=None)
    return str(newest) if newest else version


def environment_key(project: Path) -> str:
    """What makes two rendered projects' environments the same: the dependencies their own
    pyproject.toml declares and the Python their answers name (not their names)."""
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    wanted = {
        "python": answered_python(project),
        "dependencies": pyproject["project"]["dependencies"],
        "extras": pyproject["project"].get("optional-dependencies", {}),
        "groups": pyproject.get("dependency-groups", {}),
    }
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:12]


def prefect_heartbeat_seconds(project: Path) -> int:
    """PREFECT_HEARTBEAT_SECONDS of the rendered config: the automation that deploying
    creates marks a run Crashed once its heartbeats have stopped for three of them."""
    config = next((project / "src").glob("*/config.py")).read_text()
    return int(re.search(r"^PREFECT_HEARTBEAT_SECONDS = (\d+)$", config, re.M)[1])


def create_project_env(venv: Path, project: Path, dev_group: bool = True) -> ProjectEnv:
    """A venv on the project's Python with every dependency (all extras); reused once complete."""
    if not (venv / "ready").exists():
        uv, python = uv_executable(), str(venv / "bin" / "python")
        interpreter = python_interpreter(answered_python(project))
        subprocess.run([uv, "venv", "-q", "-p", interpreter, str(venv)], check=True)
        # Bytecode compiled once here: with PYTHONDONTWRITEBYTECODE set (CI machines set it),
        # every server, flow run and code location would compile its imports again (about
        # 12 CPU-seconds for the Dagster pipeline file, twice a minute in Dagster's daemon).
        install = [uv, "pip", "install", "-q", "-p", python, "-r", "pyproject.toml", "--all-extras"]
        install.append("--compile-bytecode")
        if dev_group:
            install += ["--group", "pyproject.toml:dev"]
        subprocess.run(install, check=True, cwd=project)
        (venv / "ready").touch()
    return ProjectEnv(venv)


class DevStack:
    """``python -m <package> dev`` in the background, as a student runs ``make dev``."""

    def __init__(
        self,
        env: ProjectEnv,
        project: Path,
        package: str = DEFAULT_PACKAGE,
        only: list[str] | None = None,
        **extra_env: str,
    ):
        self.env, self.project, self.package = env, project, package
        self.only, self.extra_env = only, extra_env
        # One output file per terminal: `make dev --only mlflow` and `make dev --only prefect-...`
        # may run side by side in one project.
        name = "-".join(["devstack", *(only or [])])
        self.log_path = project / ".workshop" / f"{name}.out"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> DevStack:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        args = [str(self.env.python), "-m", self.package, "dev"]
        if self.only:
            args += ["--only", *self.only]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                args,
                cwd=self.project,
                env=self.env.environ(self.project, **self.extra_env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # The dev stack bounds each server's start itself and exits naming the slow one;
        # this deadline only guards against the stack itself hanging.
        deadline = time.monotonic() + 900
        all_up = messages(self.project)["devstack"]["all_up"]  # in the class's language
        while all_up not in self.output():
            if self.process.poll() is not None:
                raise AssertionError(f"dev stack exited early:\n{self.report()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"dev stack did not come up in 900 s:\n{self.report()}")
            time.sleep(0.5)
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def record(self) -> Path:
        """Where this `make dev` wrote its PID and its servers' (one file per start)."""
        return self.project / ".workshop" / "devstack" / f"{self.process.pid}.pids"

    def server_pids(self) -> list[int]:
        """The servers' PIDs, in start order, as the stack recorded them (its own first)."""
        _owner, *servers = self.record.read_text().splitlines()
        return [int(line.split("\t")[0]) for line in servers]

    def report(self) -> str:
        """What the stack printed and the end of each server's log: CI keeps nothing else."""
        parts = [f"--- {self.log_path}\n{self.output()}"]
        for log in sorted((self.project / ".workshop" / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-20:]
            parts.append(f"--- {log.name} (last lines)\n" + "\n".join(tail))
        return "\n".join(parts)

    def __exit__(self, *exc_info: object) -> None:
        """Stop like Ctrl+C does, and insist that it really stops."""
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=Deadline.STACK_STOPPED)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                raise


def uv_executable() -> str:
    """The uv of the template's dev environment (never a pyenv shim)."""
    beside = DEV_BIN / "uv"
    return str(beside) if beside.exists() else shutil.which("uv") or "uv"


def make_commands(project: Path, verb: str, **variables: str) -> list[str]:
    """The shell commands ``make VERB`` runs in ``project``, as ``make -n`` prints them,
    with ``variables`` set on make's command line.

    Run one at a time, they can be timed step by step, or started from another folder,
    while staying exactly what the student's verb runs.
    """
    assignments = [f"{name}={value}" for name, value in variables.items()]
    listed = subprocess.run(
        ["make", "--no-print-directory", "-n", verb, *assignments],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.splitlines()


class WebhookRecorder:
    """A local HTTP endpoint standing for Discord or Slack: records the JSON bodies posted."""

    def __init__(self, reachable_at: str = "127.0.0.1") -> None:
        """Listens on ``reachable_at`` (a Docker network's gateway, for containers to post)."""
        self.payloads: list[dict] = []
        payloads = self.payloads

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers["Content-Length"]))
                payloads.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass  # keep the test output for the test

        self.server = HTTPServer((reachable_at, 0), Handler)
        # A token in the path, as Discord's and Slack's URLs carry one: the secret that
        # `places_holding` must find written nowhere.
        port = self.server.server_port
        self.url = f"http://{reachable_at}:{port}/webhook/{secrets.token_hex(12)}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def places_holding(folder: Path, secret: str) -> list[str]:
    """Every file under ``folder`` whose bytes contain ``secret``: logs, SQLite databases
    (with their -wal journals), artifacts, rendered files."""
    needle = secret.encode()
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes()
    )


def env_file_values(path: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of an .env file (a handout, classroom/.env)."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def csv_without_column(source: Path, destination: Path, column: str) -> Path:
    """A copy of a CSV file without one of its columns: a student's data file gone wrong."""
    with source.open(newline="") as infile, destination.open("w", newline="") as outfile:
        reader = csv.DictReader(infile)
        columns = [name for name in reader.fieldnames or [] if name != column]
        writer = csv.DictWriter(outfile, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(reader)
    return destination


def mlflow_api(tracking_uri: str, path: str, **params: str) -> requests.Response:
    """GET on MLflow's REST API, as the UI reads it."""
    return requests.get(f"{tracking_uri}/api/2.0/mlflow/{path}", params=params, timeout=10)


def mlflow_search_runs(tracking_uri: str, experiment: str, filter_string: str = "") -> list[dict]:
    """The runs of ``experiment`` that match ``filter_string``, newest first (none before
    the experiment exists: nothing was ever logged)."""
    found = mlflow_api(tracking_uri, "experiments/get-by-name", experiment_name=experiment)
    if found.status_code == 404:
        return []
    found.raise_for_status()
    response = requests.post(
        f"{tracking_uri}/api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [found.json()["experiment"]["experiment_id"]],
            "filter": filter_string,
        },
        timeout=10,
    )
    response.raise_for_status()
    return response.json().get("runs", [])


def mlflow_runs_tagged(tracking_uri: str, tag: str, value: str) -> list[dict]:
    """The runs of the project's experiment whose ``tag`` is ``value``."""
    return mlflow_search_runs(tracking_uri, EXPERIMENT, f"tags.{tag} = '{value}'")


def trained_candidates(tracking_uri: str, tag: str, value: str) -> list[str]:
    """The candidates a training run logged, by name: its FINISHED MLflow runs, sorted.

    Compare with ``CANDIDATES``. A task that failed and was retried (the workshop teaches
    retries) leaves its attempt FAILED beside the finished one; any other status fails.
    """
    return finished_candidates(mlflow_runs_tagged(tracking_uri, tag, value))


def finished_candidates(runs: list[dict]) -> list[str]:
    """The names of MLflow runs (as the REST API lists them) that FINISHED, sorted; a
    retried task's FAILED attempt may stand beside them, any other status fails."""
    statuses = {run["info"]["status"] for run in runs}
    assert statuses <= {"FINISHED", "FAILED"}, f"{statuses}: {runs}"
    return sorted(run["info"]["run_name"] for run in runs if run["info"]["status"] == "FINISHED")


def run_metrics(run: dict) -> dict[str, float]:
    """A run's metrics as MLflow's REST API returns them, by name."""
    return {metric["key"]: metric["value"] for metric in run["data"].get("metrics", [])}


def champion_version(tracking_uri: str) -> requests.Response:
    """The registered model's version that carries the ``champion`` alias."""
    return mlflow_api(tracking_uri, "registered-models/alias", name=MODEL_NAME, alias="champion")


def shared_tmp(tmp_path_factory, worker_id: str) -> Path:
    """A folder all xdist workers of this session share (for environments built once)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def prefect_call(method: str, url: str, deadline: float = 120, **kwargs) -> requests.Response:
    """A call to a Prefect server's API, retrying "503 Service Unavailable" as Prefect's own
    client does: the server answers 503 while its SQLite database is busy (a loaded machine).
    Any other error status raises, so that an error body is never read as data.
    """
    give_up = time.monotonic() + deadline
    response = requests.request(method, url, timeout=30, **kwargs)  # a server down raises here
    while response.status_code == 503 and time.monotonic() < give_up:
        time.sleep(2)
        response = requests.request(method, url, timeout=30, **kwargs)
    response.raise_for_status()
    return response


def prefect_get(url: str) -> dict | list:
    """GET on a Prefect server's API: the JSON it answers."""
    return prefect_call("GET", url).json()


def prefect_post(url: str, body: dict) -> requests.Response:
    """POST a JSON body to a Prefect server's API."""
    return prefect_call("POST", url, json=body)


def prefect_flow_runs(api_url: str, flow_name: str, **filters: object) -> list[dict]:
    """The flow's runs on a Prefect server (API URL ending in /api), oldest first."""
    body = {"flows": {"name": {"any_": [flow_name]}}, "sort": "EXPECTED_START_TIME_ASC", **filters}
    return prefect_post(f"{api_url}/flow_runs/filter", body).json()


def prefect_scheduled_runs(api_url: str, flow_name: str, deployment_id: str) -> list[dict]:
    """The runs a deployment's schedule created (not those started by hand), oldest first."""
    deployments = {"id": {"any_": [deployment_id]}}
    runs = prefect_flow_runs(api_url, flow_name, deployments=deployments)
    return [run for run in runs if run["auto_scheduled"]]


PREFECT_FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
DAGSTER_FINAL_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


def scheduled_prefect_run(
    api_url: str,
    flow_name: str,
    deployment_id: str,
    launch_within: float,
    end_within: float,
    hint: str = "",
) -> dict:
    """The first run the deployment's schedule created, once it has ended.

    Two deadlines: a worker picks the run up within ``launch_within`` (ticks and a poll:
    this catches a server that stopped scheduling), then the run ends within
    ``end_within`` (imports and training: this depends on the machine's load). ``hint``
    ends the failure messages (where the logs are).
    """

    def scheduled_runs() -> list[dict]:
        return prefect_scheduled_runs(api_url, flow_name, deployment_id)

    def launched() -> dict | None:
        """No longer Scheduled or Late: a worker has it."""
        return next((r for r in scheduled_runs() if r["state"]["type"] != "SCHEDULED"), None)

    def ended(run_id: str) -> dict | None:
        return next(
            (
                run
                for run in scheduled_runs()
                if run["id"] == run_id and run["state"]["type"] in PREFECT_FINAL_STATES
            ),
            None,
        )

    first = wait_until(launched, launch_within, f"no scheduled run started{hint}", interval=2)
    return wait_until(
        lambda: ended(first["id"]), end_within, f"the scheduled run never ended{hint}", interval=2
    )


DAGSTER_RUNS_QUERY = """
query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
  ... on Runs { results { runId status jobName } } } }
"""


class DagsterQueryError(RuntimeError):
    """The GraphQL API answered with errors instead of data."""


def dagster_graphql(
    url: str, query: str, auth: tuple[str, str] | None = None, **variables: object
) -> dict:
    """A query to the Dagster webserver's GraphQL API, as its UI sends them (through a
    proxy that asks for a password, with ``auth``)."""
    response = requests.post(
        f"{url}/graphql", json={"query": query, "variables": variables}, auth=auth, timeout=30
    )
    response.raise_for_status()
    body = response.json()
    if "errors" in body:  # a code location still loading: worth polling past
        raise DagsterQueryError(body["errors"])
    return body["data"]


DAGSTER_LAUNCH_RUN = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }
"""
DAGSTER_LOCATION_STATUS = """
query($name: String!) { workspaceLocationEntryOrError(name: $name) {
  ... on WorkspaceLocationEntry { locationOrLoadError {
    __typename ... on PythonError { message } } } } }
"""
DAGSTER_RUN_STATUS = """
query($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }
"""
# The Dagster exercise's locations, as dagster_home/workspace.yaml names them: the graph
# students mend, and the teacher's copy of it; and the file each serves.
DAGSTER_EXERCISE_LOCATION = "churn_exercises"
DAGSTER_SOLUTION_LOCATION = "churn_exercises_solution"
DAGSTER_EXERCISE = "pipelines/workshop/dagster/Dagster_Exercises.py"
DAGSTER_SOLUTION = "pipelines/workshop/dagster/Dagster_Exercises_solution.py"
# The points the exercise's check reports, in order: their keys in messages.toml.
DAGSTER_EXERCISE_POINTS = ["loads", "wired", "declared", "check", "mlflow", "config"]


def dagster_exercise_report(project: Path, marks: str) -> list[tuple[str, str]]:
    """The points of the exercise's check with the marks given in order (``"✓✗✗✗✗✗"``),
    as the render's catalog words them."""
    texts = messages(project)["exercises"]["dagster"]
    return [
        (mark, texts[point + ("_ok" if mark == "✓" else "_todo")])
        for mark, point in zip(marks, DAGSTER_EXERCISE_POINTS, strict=True)
    ]


def dagster_location_loaded(url: str, location: str, auth: tuple[str, str] | None = None) -> bool:
    """Whether the webserver has loaded a code location, as its UI shows it. A code server
    it could not reach yet (one that came up after it) is retried, so that is worth polling
    past; any other load error (the definitions do not import) will not mend by waiting."""
    entry = dagster_graphql(url, DAGSTER_LOCATION_STATUS, auth=auth, name=location)
    status = (entry["workspaceLocationEntryOrError"] or {}).get("locationOrLoadError") or {}
    if status.get("__typename") == "PythonError":
        assert "DagsterUserCodeUnreachableError" in status["message"], status
    return status.get("__typename") == "RepositoryLocation"


def materialize_exercise_assets(url: str, location: str, assets: list[str], **config) -> str:
    """What the UI's Materialize (or the Launchpad, with ``config`` per asset) launches in a
    location of the Dagster exercise, whose asset keys carry its file's prefix, once the UI
    shows the location loaded; returns the run's final status."""
    loaded = functools.partial(dagster_location_loaded, url, location)
    wait_until(loaded, Deadline.SERVER_UP, f"the Dagster UI never loaded {location}")
    prefix = "dagster_" + location.removeprefix("churn_")
    params = {
        "selector": {
            "repositoryLocationName": location,
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": [prefix, name]} for name in assets],
        },
        "runConfigData": {
            "ops": {f"{prefix}__{op}": {"config": values} for op, values in config.items()}
        },
    }
    launched = dagster_graphql(url, DAGSTER_LAUNCH_RUN, params=params)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def ended() -> str | None:
        status = dagster_graphql(url, DAGSTER_RUN_STATUS, runId=run_id)["runOrError"]["status"]
        return status if status in DAGSTER_FINAL_STATUSES else None

    return wait_until(ended, Deadline.SCHEDULED_RUN, f"run {run_id} never ended")


def materialize_the_solved_exercise(url: str) -> None:
    """What a class does with the mended graph, on the solution's location: Materialize
    all, then the features again from the Launchpad with another test_size."""
    assets = ["raw_customers", "customer_features", "candidate_scores"]
    assert materialize_exercise_assets(url, DAGSTER_SOLUTION_LOCATION, assets) == "SUCCESS"
    features = {"customer_features": {"test_size": 0.3}}
    launched = materialize_exercise_assets(
        url, DAGSTER_SOLUTION_LOCATION, ["customer_features"], **features
    )
    assert launched == "SUCCESS"


def dagster_runs(url: str, tag_key: str, tag_value: str) -> list[dict]:
    """The runs carrying a tag, newest first (``dagster/schedule_name`` for a schedule's)."""
    tags = [{"key": tag_key, "value": tag_value}]
    return dagster_graphql(url, DAGSTER_RUNS_QUERY, tags=tags)["runsOrError"]["results"]


def record_fault(record_property, fault: str, **seconds: float) -> None:
    """One line of the report's fault figures (conftest prints them at the end)."""
    figures = ", ".join(
        f"{name.replace('_', ' ')} {value:.0f} s" for name, value in seconds.items()
    )
    record_property("fault figures", f"{fault}: {figures}")


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """A known failure: exit 1 and one `error:` line, the last, with no traceback.

    MLflow's own INFO lines (an experiment created) may come before it.
    """
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    return errors[0]


# --- The exercises' checks -----------------------------------------------------------------

CHECK_MARKS = re.compile(r"^  ([✓✗]) (.*)$", re.MULTILINE)


def messages(project: Path) -> dict:
    """The render's message catalog: what its programs print, in its language (its package
    is named after its answers: the Docker stories answer their own project names)."""
    [catalog] = (project / "src").glob("*/messages.toml")
    return tomllib.loads(catalog.read_text())


def sentence_pattern(sentence: str) -> re.Pattern:
    """A catalog sentence as printed, whatever its ``{placeholders}`` were filled with."""
    parts = re.split(r"\{[^}]*\}", sentence)
    return re.compile(".*".join(map(re.escape, parts)))


def check_lines(result: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """The ✓/✗ lines an exercise's check printed: (mark, sentence) each."""
    return CHECK_MARKS.findall(result.stdout)


def assert_check_report(
    result: subprocess.CompletedProcess, expected: list[tuple[str, str]]
) -> None:
    """The check printed exactly these (mark, catalog sentence) lines, in order, and
    exited 0 only if every mark is ✓."""
    lines = check_lines(result)
    report = f"{result.args}:\n{result.stdout}\n{result.stderr[-3000:]}"
    assert [mark for mark, _ in lines] == [mark for mark, _ in expected], report
    for (_, line), (_, sentence) in zip(lines, expected, strict=True):
        assert sentence_pattern(sentence).fullmatch(line), f"{line!r} is not {sentence!r}\n{report}"
    passed = all(mark == "✓" for mark, _ in expected)
    assert result.returncode == (0 if passed else 1), report


# --- The class's language -------------------------------------------------------------------

# Words that carry no meaning of their own, so every sentence of a language has some.
FUNCTION_WORDS = {
    "en": {
        "the",
        "and",
        "is",
        "are",
        "with",
        "your",
        "you",
        "this",
        "that",
        "of",
        "to",
        "it",
        "its",
        "was",
        "has",
        "when",
        "then",
        "each",
        "every",
        "before",
        "after",
        "again",
        "which",
        "what",
        "there",
        "no",
        "not",
        "an",
        "in",
        "on",
        "for",
        "or",
        "by",
        "these",
        "else",
    },
    "fr": {
        "le",
        "la",
        "les",
        "des",
        "du",
        "de",
        "et",
        "est",
        "sont",
        "avec",
        "votre",
        "vous",
        "ce",
        "cette",
        "une",
        "un",
        "pas",
        "que",
        "qui",
        "pour",
        "dans",
        "sur",
        "au",
        "aux",
        "ou",
        "ne",
        "ses",
        "son",
        "sa",
        "entre",
        "aucun",
        "aucune",
        "d",
        "l",
        "qu",
        "se",
        "il",
        "elle",
        "puis",
        "chaque",
        "quand",
    },
}
CODE = re.compile(r"`[^`]*`|\{[^}]*\}|^ {4}.*$|\S*[_=()@/.:\[\]\"]\S*", re.MULTILINE)


def prose_words(sentence: str) -> list[str]:
    """The sentence's words once code, commands, identifiers and placeholders are gone."""
    return re.findall(r"[^\W\d_]+", CODE.sub(" ", sentence).lower())


def foreign_sentences(text: str, language: str) -> list[str]:
    """The lines of ``text`` written in another language than ``language``.

    A line counts as foreign when it holds two function words of another language and
    fewer of its own (code, commands and placeholders are left out first): "the run is
    Completed" in a French class's output, "le modèle est prêt" in an English one.
    Function words that two languages spell alike ("on", "un") prove nothing.
    """
    own = FUNCTION_WORDS[language]
    others = set().union(*(words for lang, words in FUNCTION_WORDS.items() if lang != language))
    others -= own
    foreign = []
    for line in text.splitlines():
        words = prose_words(line)
        theirs = [word for word in words if word in others]
        if len(theirs) >= 2 and len(theirs) > sum(word in own for word in words):
            foreign.append(line.strip())
    return foreign


# What the libraries print themselves, in English whatever the class: left out before a
# class's output is read for its language.
LIBRARY_LINES = re.compile(
    r"^\s*$"
    r"|^\d{4}[-/]\d\d[-/]\d\d[ T]\d\d:\d\d"  # Dagster's and MLflow's logging: a timestamp first
    r"|^\d\d:\d\d:\d\d\.\d+ \| "  # Prefect's logging
    r"|View (run|experiment) .*at: http"  # MLflow's links after a run
    r"|^Registered model '.*' already exists|^Successfully registered model|^Created version"
    r"|^\S+\.py:\d+: \w*Warning: |^\s+warnings\.warn\("  # Python warnings and their source line
    r"|^INFO: "  # the model server's access log (uvicorn)
)


def project_lines(output: str) -> str:
    """The lines of ``output`` that the project printed, without the libraries' own."""
    return "\n".join(line for line in output.splitlines() if not LIBRARY_LINES.search(line))


# --- Docker ---------------------------------------------------------------------------------

BASE_IMAGE = os.environ.get("WORKSHOP_BASE_IMAGE", "mlops-workshop-base:bookworm")


def engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def unavailable(reason: str) -> None:
    """Skip with the reason; under CI=true, which installs Docker (.ci/run), conftest makes
    the skip a failure."""
    pytest.skip(f"{reason} (.ci/run installs it)")
