"""Helpers shared by the template's tests: rendering, processes, ports, polling."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import TypeVar

import requests
import yaml
from copier import run_copy

TEMPLATE_ROOT = Path(__file__).resolve().parents[1]
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
T = TypeVar("T")


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

    Returns the truthy value, so a test can wait for a thing and use it.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if result := condition():
                return result
        except Exception as error:  # noqa: BLE001 - keep polling, report the last one
            last_error = error
        time.sleep(interval)
    raise AssertionError(f"{message} (waited {timeout:.0f} s; last error: {last_error!r})")


def http_ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


class ProjectEnv:
    """One virtual environment with the rendered project's dependencies, shared by tests.

    The project's code is not installed: commands run with ``PYTHONPATH=src``
    from the project's folder, so every rendered project can use the same env.
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
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(map(str, args))} exited {result.returncode}\n"
                f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}"
            )
        return result


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
        while "All services are up" not in self.output():
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
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                raise


def uv_executable() -> str:
    """The uv of the template's dev environment (never a pyenv shim)."""
    beside = Path(sys.executable).parent / "uv"
    return str(beside) if beside.exists() else shutil.which("uv") or "uv"


def make_commands(project: Path, verb: str) -> list[str]:
    """The shell commands ``make VERB`` runs in ``project``, as ``make -n`` prints them.

    Run one at a time, they can be timed step by step, or started from another folder,
    while staying exactly what the student's verb runs.
    """
    listed = subprocess.run(
        ["make", "--no-print-directory", "-n", verb],
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


def mlflow_api(tracking_uri: str, path: str, **params: str) -> requests.Response:
    """GET on MLflow's REST API, as the UI reads it."""
    return requests.get(f"{tracking_uri}/api/2.0/mlflow/{path}", params=params, timeout=10)


def mlflow_runs_tagged(tracking_uri: str, tag: str, value: str) -> list[dict]:
    """The runs of the project's experiment whose ``tag`` is ``value`` (none if no experiment)."""
    found = mlflow_api(tracking_uri, "experiments/get-by-name", experiment_name=EXPERIMENT)
    if found.status_code == 404:
        return []  # nothing was ever logged
    found.raise_for_status()
    response = requests.post(
        f"{tracking_uri}/api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [found.json()["experiment"]["experiment_id"]],
            "filter": f"tags.{tag} = '{value}'",
        },
        timeout=10,
    )
    response.raise_for_status()
    return response.json().get("runs", [])


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


def prefect_post(url: str, body: dict, deadline: float = 120) -> requests.Response:
    """POST to a Prefect server's API, retrying "503 Service Unavailable" as Prefect's own
    client does: the server answers 503 while its SQLite database is busy (a loaded machine).
    """
    give_up = time.monotonic() + deadline
    response = requests.post(url, json=body, timeout=30)  # a server that is down raises here
    while response.status_code == 503 and time.monotonic() < give_up:
        time.sleep(2)
        response = requests.post(url, json=body, timeout=30)
    response.raise_for_status()
    return response


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


def dagster_graphql(url: str, query: str, **variables: object) -> dict:
    """A query to the Dagster webserver's GraphQL API, as its UI sends them."""
    response = requests.post(
        f"{url}/graphql", json={"query": query, "variables": variables}, timeout=30
    )
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


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
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    return errors[0]
