"""Faults under a running schedule (Prefect, native stack): MLflow killed while a scheduled
run logs; every server restarted; the worker killed while a scheduled run trains.

One project, with MLflow started as `make mlflow` in one terminal and the Prefect server
and worker as `make dev --only prefect-server prefect-worker` in another, so that each
can die and come back alone. The reference pipeline is deployed on a one-minute cron and
ticks throughout; every run the test looks at was started by the schedule, not by the test.
Each fault's figures (injection to detection, to recovery) go to the test report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from helpers import (
    DEFAULT_PACKAGE,
    EXPERIMENT,
    MODEL_NAME,
    PREFECT_FINAL_STATES,
    Deadline,
    DevStack,
    ProjectEnv,
    WebhookRecorder,
    champion_version,
    listening,
    messages,
    mlflow_api,
    mlflow_search_runs,
    one_line_error,
    places_holding,
    prefect_get,
    prefect_heartbeat_seconds,
    prefect_post,
    prefect_scheduled_runs,
    record_fault,
    sentence_pattern,
    stack_env,
    wait_for_output,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("faults-scheduled")]

PIPELINE = "pipelines/examples/Prefect_ML_Pipeline.py"
FLOW = "churn-training-pipeline"
DEPLOYMENT = "scheduled-training"


@dataclass
class Scene:
    """The project, its two terminals, and the deployment that ticks every minute."""

    project: Path
    project_env: ProjectEnv
    env: dict[str, str]
    webhook: WebhookRecorder
    deployment_id: str = ""
    terminals: dict[str, DevStack] = field(default_factory=dict)  # what runs in each now
    started: list[DevStack] = field(default_factory=list)  # every stack, stopped at the end

    @property
    def mlflow(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def api(self) -> str:
        return self.env["PREFECT_API_URL"]

    def open_terminal(self, name: str, *services: str) -> DevStack:
        """`make dev --only <services>` in the terminal ``name``, as a student types it."""
        stack = DevStack(self.project_env, self.project, only=list(services), **self.env)
        self.started.append(stack.__enter__())
        self.terminals[name] = stack
        return stack


def scheduled_runs(scene: Scene) -> list[dict]:
    return prefect_scheduled_runs(scene.api, FLOW, scene.deployment_id)


def flow_run(scene: Scene, run_id: str) -> dict:
    return prefect_get(f"{scene.api}/flow_runs/{run_id}")


def ended(scene: Scene, run_id: str) -> dict | None:
    run = flow_run(scene, run_id)
    return run if run["state"]["type"] in PREFECT_FINAL_STATES else None


def task_runs(scene: Scene, run_id: str) -> list[dict]:
    body = {"flow_runs": {"id": {"any_": [run_id]}}}
    return prefect_post(f"{scene.api}/task_runs/filter", body).json()


def mlflow_runs(scene: Scene, status: str) -> list[dict]:
    """The project's MLflow runs in ``status`` (RUNNING, FINISHED, FAILED)."""
    return mlflow_search_runs(scene.mlflow, EXPERIMENT, f"attributes.status = '{status}'")


def tag(run: dict, key: str) -> str | None:
    return next((t["value"] for t in run["data"].get("tags", []) if t["key"] == key), None)


# --- The scene: two terminals and a deployment ticking every minute --------------------


@pytest.fixture(scope="module")
def scene(render_project, project_env_for) -> Iterator[Scene]:
    project = render_project("faults-scheduled", orchestrator="prefect", notifications="discord")
    project_env = project_env_for(project)
    project_env.run([str(project_env.python), "generate_sample_data.py"], project)
    webhook = WebhookRecorder()
    env = {
        **stack_env("prefect"),
        "PREFECT_HOME": str(project / ".workshop" / "client-prefect"),
        "DISCORD_WEBHOOK_URL": webhook.url,
    }
    scene = Scene(project, project_env, env, webhook)
    deploy_log = project / ".workshop" / "deploy.out"
    deploy = None
    try:
        scene.open_terminal("mlflow", "mlflow")  # `make mlflow`
        scene.open_terminal("prefect", "prefect-server", "prefect-worker")
        with deploy_log.open("w") as output:
            deploy = subprocess.Popen(
                [str(project_env.python), PIPELINE, "deploy"],
                cwd=project,
                env=project_env.environ(project, **env, SCHEDULE_CRON="* * * * *"),
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        watching = messages(project)["prefect"]["deploy"]["watching"]
        wait_for_output(deploy, deploy_log, watching, Deadline.DEPLOYED, "deploy")
        url = f"{scene.api}/deployments/name/{FLOW}/{DEPLOYMENT}"
        scene.deployment_id = prefect_get(url)["id"]
        yield scene
    finally:
        if deploy and deploy.poll() is None:
            os.killpg(deploy.pid, signal.SIGKILL)
            deploy.wait()
        for stack in reversed(scene.started):
            stack.__exit__(None, None, None)
        webhook.close()


# --- MLflow killed while a scheduled run logs ------------------------------------------


@dataclass
class KilledMlflow:
    run_id: str  # the Prefect flow run caught logging
    injected: float  # time.monotonic() at the kill
    detected: float  # when that flow run had ended


@pytest.fixture(scope="module")
def mlflow_killed(scene: Scene) -> KilledMlflow:
    """Wait for a scheduled run to log its first model, then kill `make mlflow` and its server."""
    logging_run = wait_until(
        lambda: mlflow_runs(scene, "RUNNING"),
        Deadline.SCHEDULE_LAUNCH + Deadline.SCHEDULED_RUN,
        "no scheduled run ever logged to MLflow",
        interval=0.2,
    )[0]
    run_id = tag(logging_run, "prefect_flow_run_id")
    terminal = scene.terminals["mlflow"]
    [server] = terminal.server_pids()
    # The terminal first, or it would start MLflow again: the server must stay down
    # longer than the tasks' retries.
    os.kill(terminal.process.pid, signal.SIGKILL)
    os.killpg(server, signal.SIGKILL)
    injected = time.monotonic()
    message = f"flow run {run_id} never ended"
    wait_until(lambda: ended(scene, run_id), Deadline.SCHEDULED_RUN, message)
    return KilledMlflow(run_id, injected, time.monotonic())


def test_the_run_caught_logging_fails_naming_the_tracking_server(
    scene: Scene, mlflow_killed: KilledMlflow, record_property
):
    run = flow_run(scene, mlflow_killed.run_id)
    assert run["state"]["type"] == "FAILED", run["state"]  # failed cleanly, not crashed
    message = run["state"]["message"]
    assert f"MLflow tracking server at {scene.mlflow} is not reachable" in message, message
    training = [t for t in task_runs(scene, run["id"]) if t["name"].startswith("train_candidate")]
    assert max(t["run_count"] for t in training) == 3, "train_candidate retried twice first"
    record_fault(
        record_property,
        "MLflow killed mid-run",
        run_failed_after=mlflow_killed.detected - mlflow_killed.injected,
    )


def test_the_other_terminal_carries_on(scene: Scene, mlflow_killed):
    assert scene.terminals["prefect"].process.poll() is None
    assert listening(int(scene.env["PREFECT_PORT"]))


def test_the_failure_is_notified_with_the_server_named(scene: Scene, mlflow_killed: KilledMlflow):
    """Prefect's failure hook posts after the run's FAILED state: the message is waited for."""
    run = flow_run(scene, mlflow_killed.run_id)

    def failure_message() -> str | None:
        contents = [payload["content"] for payload in scene.webhook.payloads]
        return next((content for content in contents if run["name"] in content), None)

    failure = wait_until(failure_message, Deadline.NOTIFIED, f"no message about {run['name']}")
    failed = messages(scene.project)["prefect"]["notify"]["failed"].format(flow=FLOW)
    assert failure.startswith("❌") and failed in failure
    assert f"MLflow tracking server at {scene.mlflow} is not reachable" in failure


# --- Both terminals started again: the schedule carries on ------------------------------


@dataclass
class Restart:
    before: dict[str, str]  # each scheduled run's state before the restart
    after: dict[str, str]  # and right after it
    deployment: dict  # as the restarted server has it
    back: float  # time.monotonic() when both terminals were up again
    seconds_down: float  # Prefect's Ctrl+C to both terminals up
    run: dict  # the first scheduled run to start after the restart, completed
    recovered: float  # from MLflow's kill to that run's completion


@pytest.fixture(scope="module")
def restarted(scene: Scene, mlflow_killed: KilledMlflow) -> Restart:
    """Ctrl+C in the Prefect terminal, then `make mlflow` and `make dev --only ...` again:
    every server of the project restarted, the next run the schedule starts must succeed."""
    before = {run["id"]: run["state"]["type"] for run in scheduled_runs(scene)}
    scene.terminals["prefect"].__exit__(None, None, None)
    stopped = time.monotonic()
    scene.open_terminal("mlflow", "mlflow")
    scene.open_terminal("prefect", "prefect-server", "prefect-worker")
    back, back_at = time.monotonic(), datetime.now(UTC)
    deployment = prefect_get(f"{scene.api}/deployments/{scene.deployment_id}")
    after = {run["id"]: run["state"]["type"] for run in scheduled_runs(scene)}

    def completed_after_restart() -> dict | None:
        """Started after it (the scheduler made the next runs long before)."""
        return next(
            (
                run
                for run in scheduled_runs(scene)
                if run["state"]["type"] == "COMPLETED"
                and datetime.fromisoformat(run["start_time"]) > back_at
            ),
            None,
        )

    run = wait_until(
        completed_after_restart,
        Deadline.SCHEDULE_LAUNCH + Deadline.SCHEDULED_RUN,
        "no scheduled run after restart",
    )
    recovered = time.monotonic() - mlflow_killed.injected
    return Restart(before, after, deployment, back, back - stopped, run, recovered)


def test_the_next_scheduled_run_promotes_a_champion(
    scene: Scene, restarted: Restart, record_property
):
    record_fault(
        record_property,
        "MLflow killed mid-run",
        next_scheduled_run_completed_after=restarted.recovered,
    )
    champion = champion_version(scene.mlflow)
    assert champion.ok, champion.text
    version = champion.json()["model_version"]
    run = mlflow_api(scene.mlflow, "runs/get", run_id=version["run_id"]).json()["run"]
    assert run["info"]["status"] == "FINISHED"
    assert tag(run, "prefect_flow_run_id") == restarted.run["id"]


def test_no_model_version_points_at_a_run_the_kill_broke(scene: Scene, restarted: Restart):
    versions = mlflow_api(
        scene.mlflow, "model-versions/search", filter=f"name='{MODEL_NAME}'"
    ).json()["model_versions"]
    assert versions
    for version in versions:
        run = mlflow_api(scene.mlflow, "runs/get", run_id=version["run_id"]).json()["run"]
        assert run["info"]["status"] == "FINISHED", version


def test_the_champion_loads_and_predicts(scene: Scene, restarted: Restart):
    """Its artifacts are all there: batch inference with `models:/...@champion` works."""
    output = scene.project / "predictions-after-restart.csv"
    predict = ["predict", "--input", "data/customer_data.csv", "--output", str(output)]
    python = str(scene.project_env.python)
    scene.project_env.run([python, "-m", DEFAULT_PACKAGE, *predict], scene.project, **scene.env)
    assert len(output.read_text().splitlines()) > 1


def test_a_prefect_restart_keeps_the_schedule(restarted: Restart):
    [schedule] = restarted.deployment["schedules"]
    assert schedule["active"] and schedule["schedule"]["cron"] == "* * * * *"
    assert not restarted.deployment["paused"]


def test_a_prefect_restart_keeps_the_run_history(restarted: Restart, record_property):
    ended_before = {
        run: state for run, state in restarted.before.items() if state in PREFECT_FINAL_STATES
    }
    assert ended_before and ended_before.items() <= restarted.after.items()
    record_fault(
        record_property,
        "Prefect server and worker restarted (with MLflow)",
        servers_back_after=restarted.seconds_down,
    )


# --- The worker killed mid-run: the run is marked Crashed, the next tick runs -------------


@dataclass
class KilledWorker:
    run_id: str
    injected: float
    crashed: float  # when the server had marked the run Crashed
    recovered: float  # when a later scheduled run had completed


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the flow runs a worker started), read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        found += (below := children.get(queue.pop(), []))
        queue += below
    return found


@pytest.fixture(scope="module")
def worker_killed(scene: Scene, restarted: Restart) -> KilledWorker:
    """SIGKILL the worker and the flow run it started, as a dead machine or container would."""
    # `make dev` restarts only a server that had run a minute (else it is broken, not unlucky)
    supervised_after = restarted.back + 70

    def running_run() -> dict | None:
        """A scheduled run that is training: it has sent heartbeats by then."""
        if time.monotonic() < supervised_after:
            return None
        training = {tag(run, "prefect_flow_run_id") for run in mlflow_runs(scene, "RUNNING")}
        return next(
            (
                r
                for r in scheduled_runs(scene)
                if r["state"]["type"] == "RUNNING" and r["id"] in training
            ),
            None,
        )

    message = "no scheduled run to kill"
    run = wait_until(running_run, Deadline.SCHEDULE_LAUNCH + 120, message, interval=0.5)
    worker = scene.terminals["prefect"].server_pids()[1]
    for pid in [worker, *descendants(worker)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    injected = time.monotonic()
    # The automation's window (three missed heartbeats), and its checks.
    crashed_deadline = 3 * prefect_heartbeat_seconds(scene.project) + 120
    wait_until(lambda: ended(scene, run["id"]), crashed_deadline, "the killed run stayed Running")
    crashed = time.monotonic()

    def completed_later() -> dict | None:
        return next(
            (
                r
                for r in scheduled_runs(scene)
                if r["expected_start_time"] > run["expected_start_time"]
                and r["state"]["type"] == "COMPLETED"
            ),
            None,
        )

    deadline = Deadline.SCHEDULE_LAUNCH + Deadline.SCHEDULED_RUN
    wait_until(completed_later, deadline, "no tick ran after the kill")
    return KilledWorker(run["id"], injected, crashed, time.monotonic())


def test_the_killed_run_is_marked_crashed(
    scene: Scene, worker_killed: KilledWorker, record_property
):
    state = flow_run(scene, worker_killed.run_id)["state"]
    assert state["type"] == "CRASHED", state
    assert messages(scene.project)["prefect"]["crash"]["message"] in state["message"], state
    record_fault(
        record_property,
        "Prefect worker killed mid-run",
        marked_crashed_after=worker_killed.crashed - worker_killed.injected,
        next_scheduled_run_completed_after=worker_killed.recovered - worker_killed.injected,
    )


def test_make_dev_restarted_the_worker(scene: Scene, worker_killed: KilledWorker):
    output = scene.terminals["prefect"].output()
    said = messages(scene.project)["devstack"]
    restarting = sentence_pattern(said["restarting"].replace("{service}", "prefect-worker"))
    assert restarting.search(output), output[-3000:]
    assert said["running_again"].format(service="prefect-worker") in output, output[-3000:]


def test_a_cron_prefect_refuses_is_named_and_changes_nothing(scene: Scene, restarted: Restart):
    result = scene.project_env.run(
        [str(scene.project_env.python), PIPELINE, "deploy"],
        scene.project,
        check=False,
        **{**scene.env, "SCHEDULE_CRON": "61 * * * *"},
    )
    bad_cron = messages(scene.project)["prefect"]["schedule"]["bad_cron"]
    refused = bad_cron.format(variable="SCHEDULE_CRON", expression="61 * * * *", error="{error}")
    assert sentence_pattern(refused).search(one_line_error(result))
    deployment = prefect_get(f"{scene.api}/deployments/{scene.deployment_id}")
    assert deployment["schedules"][0]["schedule"]["cron"] == "* * * * *"


def test_each_tick_ran_once(scene: Scene, worker_killed):
    """Through kills and restarts: one flow run per scheduled time, and no flow run that
    trained twice (three finished candidates each at most in MLflow; a retried task's
    failed attempt does not count)."""
    starts = [run["expected_start_time"] for run in scheduled_runs(scene)]
    assert len(starts) == len(set(starts)), starts
    trained = Counter(tag(run, "prefect_flow_run_id") for run in mlflow_runs(scene, "FINISHED"))
    assert trained and max(trained.values()) <= 3, trained


def test_the_webhook_url_is_written_nowhere(scene: Scene, worker_killed):
    assert scene.webhook.payloads, "messages went out"
    assert places_holding(scene.project, scene.webhook.url) == []
