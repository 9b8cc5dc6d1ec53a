"""The Prefect track end to end: a student's commands against real servers.

One rendered project (orchestrator=prefect, notifications=discord) gets the dev
stack of `make dev` (MLflow, Prefect server, process worker) on free ports; the
workshop parts run as subprocesses and the assertions read what the servers hold
through their REST APIs. A second project (orchestrator=both, notifications=slack)
runs against the same servers. The deployment test waits for a run created by the
schedule itself, so a server that stops scheduling (the SQLAlchemy 2.1 break) fails it.

Independent commands run at the same time (each pays seconds of imports), and the
deployment is started before part 7 so that its schedule ticks while part 7 runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from helpers import (
    CANDIDATES,
    STRICT_WARNINGS,
    Deadline,
    DevStack,
    ProjectEnv,
    WebhookRecorder,
    champion_version,
    free_port,
    messages,
    mlflow_runs_tagged,
    places_holding,
    prefect_flow_runs,
    prefect_get,
    prefect_post,
    run_metrics,
    scheduled_prefect_run,
    sentence_pattern,
    stack_env,
    succeeded,
    trained_candidates,
    wait_for_output,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("prefect")]

WORKSHOP = "pipelines/workshop/prefect/Prefect_Workshop.py"
PARTS = ["part1", "part2", "part3", "part4", "part5", "part7", "deploy"]
PIPELINE_FLOW = "churn-training-pipeline"
PIPELINE_ENTRYPOINT = "pipelines/examples/Prefect_ML_Pipeline.py:training_pipeline"
DEPLOYMENT = "scheduled-training"


@dataclass
class Stack:
    project: Path
    env: dict[str, str]
    api: str
    mlflow: str
    devstack: DevStack


# --- Fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(render_project) -> Path:
    return render_project("prefect-track", orchestrator="prefect", notifications="discord")


@pytest.fixture(scope="module")
def project_env(project: Path, project_env_for) -> ProjectEnv:
    """The Prefect-only project's own environment."""
    return project_env_for(project)


@pytest.fixture(scope="module")
def stack(project: Path, project_env: ProjectEnv) -> Iterator[Stack]:
    env = {
        **stack_env("prefect"),
        # The clients' result storage (the feature cache) stays inside the test project.
        "PREFECT_HOME": str(project / ".workshop" / "client-prefect"),
    }
    project_env.run([str(project_env.python), "generate_sample_data.py"], project, **env)
    devstack = DevStack(project_env, project, **env)
    with devstack:
        children = child_pids(devstack.process.pid)
        yield Stack(project, env, env["PREFECT_API_URL"], env["MLFLOW_TRACKING_URI"], devstack)
    worker_log = (project / ".workshop" / "logs" / "prefect-worker.log").read_text()
    assert "stopped!" in worker_log, "the worker was killed instead of stopping on SIGTERM"
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], (
        "a service outlived Ctrl+C"
    )


# --- Helpers -------------------------------------------------------------------------


def child_pids(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def run_together(
    project_env_for: Callable[[Path], ProjectEnv],
    commands: dict[str, tuple[Path, list[str], dict[str, str]]],
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Start every command at once (name: project folder, arguments, env) and wait for all
    of them, each in its project's own environment.

    Deprecation warnings are errors in them (``STRICT_WARNINGS``).
    """
    with ExitStack() as files:
        started = {}
        for name, (folder, args, env) in commands.items():
            project_env = project_env_for(folder)
            out, err = (files.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2))
            process = subprocess.Popen(
                [str(project_env.python), *STRICT_WARNINGS, *args],
                cwd=folder,
                env=project_env.environ(folder, **env),
                stdout=out,
                stderr=err,
                text=True,
            )
            files.callback(lambda p=process: p.poll() is None and p.kill())
            started[name] = (process, out, err)
        results = {}
        for name, (process, out, err) in started.items():
            process.wait(timeout=600)
            out.seek(0)
            err.seek(0)
            results[name] = subprocess.CompletedProcess(
                process.args, process.returncode, out.read(), err.read()
            )
    return results


def api_post(stack: Stack, path: str, body: dict) -> list[dict]:
    return prefect_post(f"{stack.api}{path}", body).json()


def flow_runs(stack: Stack, flow_name: str, **filters: object) -> list[dict]:
    return prefect_flow_runs(stack.api, flow_name, **filters)


def task_runs(stack: Stack, flow_run_id: str) -> list[dict]:
    return api_post(stack, "/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})


def state_history(stack: Stack, task_run_id: str) -> list[str]:
    states = prefect_get(f"{stack.api}/task_run_states/?task_run_id={task_run_id}")
    return [state["name"] for state in states]


def mlflow_runs_of(stack: Stack, flow_run_id: str) -> list[dict]:
    return mlflow_runs_tagged(stack.mlflow, "prefect_flow_run_id", flow_run_id)


def timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_completed(runs: list[dict], flow_name: str, count: int = 1) -> None:
    states = [run["state"]["type"] for run in runs]
    assert len(runs) == count and set(states) == {"COMPLETED"}, f"{flow_name}: {states}"


# --- Bad input -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_input(project: Path, project_env_for) -> dict[str, subprocess.CompletedProcess]:
    unreachable = f"http://127.0.0.1:{free_port()}/api"
    return run_together(
        project_env_for,
        {
            "no part": (project, [WORKSHOP], {}),
            "unknown part": (project, [WORKSHOP, "part6"], {}),
            "no server": (project, [WORKSHOP, "part1"], {"PREFECT_API_URL": unreachable}),
        },
    )


def test_no_part_or_an_unknown_part_lists_the_parts(project: Path, bad_input):
    listed, unknown = succeeded(bad_input["no part"]), bad_input["unknown part"]
    assert unknown.returncode != 0
    unknown_part = messages(project)["workshop"]["prefect"]["unknown_part"]
    assert unknown_part.format(part="part6") in unknown.stderr
    for part in PARTS:
        assert part in listed.stdout and part in unknown.stderr
    assert "Traceback" not in unknown.stderr
    make = subprocess.run(
        ["make", "--dry-run", "prefect", "PART=part3"], cwd=project, capture_output=True, text=True
    )
    assert f"{WORKSHOP} part3" in make.stdout, make.stdout + make.stderr


def test_server_not_running_names_prefect_api_url(project: Path, bad_input):
    result = bad_input["no server"]
    assert result.returncode == 1, result.stdout + result.stderr
    unreachable = messages(project)["prefect"]["server_unreachable"]
    assert sentence_pattern(unreachable).search(result.stderr), result.stderr
    assert "PREFECT_API_URL=http://127.0.0.1:" in result.stderr and "make dev" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1


def test_prefect_only_render_has_no_dagster_files(project: Path):
    assert (project / WORKSHOP).is_file()
    assert (project / "pipelines/examples/Prefect_ML_Pipeline.py").is_file()
    assert not list(project.rglob("*agster*")), "a Dagster file in a Prefect-only project"


# --- Parts 1 to 4 ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def parts(stack: Stack, project_env_for) -> dict[str, subprocess.CompletedProcess]:
    commands = {part: (stack.project, [WORKSHOP, part], stack.env) for part in PARTS[:4]}
    return {
        name: succeeded(result) for name, result in run_together(project_env_for, commands).items()
    }


def test_part1_tasks_and_flows(stack: Stack, parts):
    texts = messages(stack.project)["workshop"]["prefect"]
    assert texts["part1"]["title"] in parts["part1"].stdout
    assert sentence_pattern(texts["in_ui"]).search(parts["part1"].stdout)
    [run] = flow_runs(stack, "part1-first-flow")
    assert_completed([run], "part1-first-flow")
    names = sorted(task["name"].rsplit("-", 1)[0] for task in task_runs(stack, run["id"]))
    assert names == ["load_customers", "summarize"]


def test_part2_retries_are_visible(stack: Stack, parts):
    [run] = flow_runs(stack, "part2-retries")
    assert_completed([run], "part2-retries")
    tasks = {task["name"].rsplit("-", 1)[0]: task for task in task_runs(stack, run["id"])}
    assert set(tasks) == {"fetch_customers", "validate_remotely"}
    for name, task in tasks.items():
        history = state_history(stack, task["id"])
        assert task["run_count"] > 1, f"{name} was not retried: {history}"
        assert "AwaitingRetry" in history and history[-1] == "Completed", f"{name}: {history}"
    assert "Retry 1/3 will start" in parts["part2"].stderr + parts["part2"].stdout


def test_part3_caches_features_and_trains_in_parallel(stack: Stack, parts):
    output = parts["part3"].stdout
    texts = messages(stack.project)["workshop"]["prefect"]["part3"]
    second_run = texts["second_run"].format(state="Cached", seconds="{seconds}")
    assert sentence_pattern(second_run).search(output), output
    first, second = flow_runs(stack, "part3-features")
    assert_completed([first, second], "part3-features", count=2)
    [cached] = task_runs(stack, second["id"])
    assert cached["state"]["name"] == "Cached"
    [parallel] = flow_runs(stack, "part3-parallel-training")
    assert_completed([parallel], "part3-parallel-training")
    training = [t for t in task_runs(stack, parallel["id"]) if "evaluate_candidate" in t["name"]]
    assert len(training) == 3
    last_start = max(timestamp(t["start_time"]) for t in training)
    first_end = min(timestamp(t["end_time"]) for t in training)
    assert last_start < first_end, "the three training tasks did not overlap"
    assert_completed(flow_runs(stack, "part3-sequential-training"), "sequential")
    assert sentence_pattern(texts["training_times"]).search(output), output


def test_part4_validates_parameters_and_runs_subflows(stack: Stack, parts):
    output = parts["part4"].stdout
    unknown_models = messages(stack.project)["prefect"]["unknown_models"]
    refused = unknown_models.format(unknown=["deep_net"], choices="{choices}")
    assert sentence_pattern(refused).search(output), output
    assert "test_size: Input should be less than 1" in output
    [parent] = flow_runs(stack, "part4-compare-models")
    assert_completed([parent], "part4-compare-models")
    assert parent["parameters"]["models"] == ["logistic_regression", "random_forest"]
    subflows = flow_runs(stack, "part4-evaluate-model")
    assert_completed(subflows, "part4-evaluate-model", count=2)
    parent_tasks = {task["id"] for task in task_runs(stack, parent["id"])}
    assert {run["parent_task_run_id"] for run in subflows} <= parent_tasks


# --- Part 5: MLflow -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(stack: Stack, project_env_for) -> dict[str, subprocess.CompletedProcess]:
    """Part 5, and the same pipeline with its data file missing (an injected failure)."""
    missing = {**stack.env, "DATA_PATH": str(stack.project / "missing.csv")}
    return run_together(
        project_env_for,
        {
            "part5": (stack.project, [WORKSHOP, "part5"], stack.env),
            "no data": (stack.project, [WORKSHOP, "part5"], missing),
        },
    )


def test_part5_logs_to_mlflow_and_promotes_a_champion(stack: Stack, pipeline):
    assert "is the new champion" in succeeded(pipeline["part5"]).stdout
    runs = flow_runs(stack, PIPELINE_FLOW)
    [run] = [r for r in runs if r["state"]["type"] != "FAILED"]
    assert_completed([run], PIPELINE_FLOW)
    assert trained_candidates(stack.mlflow, "prefect_flow_run_id", run["id"]) == CANDIDATES
    logged = [r for r in mlflow_runs_of(stack, run["id"]) if r["info"]["status"] == "FINISHED"]
    for logged_run in logged:
        assert {"accuracy", "precision", "recall", "f1", "roc_auc"} <= set(run_metrics(logged_run))
    champion = champion_version(stack.mlflow).json()["model_version"]
    best = max(logged, key=lambda r: run_metrics(r)["f1"])
    assert champion["run_id"] == best["info"]["run_id"]


def test_pipeline_failure_is_one_clear_line(stack: Stack, pipeline):
    """No data file: the flow fails, the student reads one line; no URL: it says so."""
    result = pipeline["no data"]
    assert result.returncode == 1, result.stdout + result.stderr
    assert "missing.csv not found" in result.stderr and "make data" in result.stderr
    assert result.stderr.count("DISCORD_WEBHOOK_URL is not set") == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: Data file")
    states = [r["state"]["type"] for r in flow_runs(stack, PIPELINE_FLOW)]
    assert states.count("FAILED") == 1, states


# --- Part 6: deployment on a schedule (started before part 7, checked at the end) ------------


@dataclass
class Deployment:
    process: subprocess.Popen
    log: Path
    info: dict
    registered: float  # when the deployment and its schedule existed on the server


@pytest.fixture(scope="module")
def deployment(stack: Stack, project_env: ProjectEnv, pipeline) -> Iterator[Deployment]:
    """`deploy` with a one-minute cron, left running while part 7 uses the servers."""
    log = stack.project / ".workshop" / "deploy.out"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(project_env.python), *STRICT_WARNINGS, WORKSHOP, "deploy"],
            cwd=stack.project,
            env=project_env.environ(stack.project, **stack.env, SCHEDULE_CRON="* * * * *"),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        watching = messages(stack.project)["prefect"]["deploy"]["watching"]
        wait_for_output(process, log, watching, Deadline.DEPLOYED, "deploy")
        registered = time.monotonic()  # the schedule's clock starts here, not at Python's start
        url = f"{stack.api}/deployments/name/{PIPELINE_FLOW}/{DEPLOYMENT}"
        yield Deployment(process, log, prefect_get(url), registered)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_deploy_registers_the_schedule(deployment: Deployment):
    assert deployment.info["work_pool_name"] == "workshop-pool"
    assert deployment.info["entrypoint"] == PIPELINE_ENTRYPOINT
    [schedule] = deployment.info["schedules"]
    assert schedule["schedule"]["cron"] == "* * * * *"
    assert schedule["schedule"]["timezone"] == "UTC"
    assert schedule["active"] and not deployment.info["paused"]


# --- Part 7: notifications ----------------------------------------------------------------


@dataclass
class Notified:
    discord: list[dict]
    slack: list[dict]
    both: Path
    webhook_urls: set[str]


@pytest.fixture(scope="module")
def notified(render_project, project_env_for, stack: Stack, deployment) -> Notified:
    """Part 7 in this project (Discord) and in an orchestrator=both project (Slack)."""
    both = render_project("prefect-both", orchestrator="both", notifications="slack")
    both_env = {**stack.env, "PREFECT_HOME": str(both / ".workshop" / "client-prefect")}
    both_project_env = project_env_for(both)
    both_project_env.run([str(both_project_env.python), "generate_sample_data.py"], both)
    discord, slack = WebhookRecorder(), WebhookRecorder()
    try:
        results = run_together(
            project_env_for,
            {
                "discord": (
                    stack.project,
                    [WORKSHOP, "part7"],
                    {**stack.env, "DISCORD_WEBHOOK_URL": discord.url},
                ),
                "slack": (both, [WORKSHOP, "part7"], {**both_env, "SLACK_WEBHOOK_URL": slack.url}),
            },
        )
    finally:
        discord.close()
        slack.close()
    for result in results.values():
        succeeded(result)
    return Notified(discord.payloads, slack.payloads, both, {discord.url, slack.url})


def test_part7_sends_discord_messages(stack: Stack, notified: Notified):
    assert [set(payload) for payload in notified.discord] == [{"content"}, {"content"}]
    success, failure = (payload["content"] for payload in notified.discord)
    titles = messages(stack.project)["prefect"]["notify"]
    assert success.startswith("✅") and titles["succeeded"].format(flow=PIPELINE_FLOW) in success
    assert failure.startswith("❌") and titles["failed"].format(flow="part7-broken-data") in failure
    assert "Missing column(s): churned" in failure and "/runs/flow-run/" in failure
    broken = flow_runs(stack, "part7-broken-data")
    assert [run["state"]["type"] for run in broken] == ["FAILED", "FAILED"]  # both projects


def test_both_orchestrators_render_sends_slack_messages(notified: Notified):
    """orchestrator=both: the Prefect files coexist with Dagster's and run the same way."""
    assert (notified.both / "pipelines/workshop/dagster").is_dir()
    assert [set(payload) for payload in notified.slack] == [{"text", "blocks"}] * 2
    success, failure = notified.slack
    titles = messages(notified.both)["prefect"]["notify"]
    succeeded_title = titles["succeeded"].format(flow=PIPELINE_FLOW)
    assert success["text"].startswith("✅") and succeeded_title in success["text"]
    block = failure["blocks"][0]
    assert block["type"] == "section" and block["text"]["type"] == "mrkdwn"
    assert titles["failed"].format(flow="part7-broken-data") in block["text"]["text"]


def test_the_webhook_urls_are_written_nowhere(stack: Stack, notified: Notified):
    """Secrets: in no log, flow-run parameter, Prefect or MLflow database, project file."""
    assert notified.discord and notified.slack, "the URLs were used: messages went out"
    for url in notified.webhook_urls:
        for project in (stack.project, notified.both):
            assert places_holding(project, url) == [], url


def test_a_scheduled_run_completes_by_itself(stack: Stack, deployment: Deployment):
    """A run the schedule created (not the test) completes and logs to MLflow; Ctrl+C pauses."""

    logs = f"; see {stack.project}/.workshop/logs/prefect-*.log"
    # The launch deadline runs from the deployment's registration (part 7 ran since), and
    # still leaves the worker a tick and a poll.
    since = time.monotonic() - deployment.registered
    launch_within = max(Deadline.SCHEDULE_LAUNCH - since, 60)
    run = scheduled_prefect_run(
        stack.api,
        PIPELINE_FLOW,
        deployment.info["id"],
        launch_within,
        Deadline.SCHEDULED_RUN,
        logs,
    )
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert trained_candidates(stack.mlflow, "prefect_flow_run_id", run["id"]) == CANDIDATES
    deployment.process.send_signal(signal.SIGINT)
    assert deployment.process.wait(timeout=Deadline.STOPPED) == 0
    paused = messages(stack.project)["prefect"]["schedule"]["paused"]
    assert sentence_pattern(paused).search(deployment.log.read_text())
    assert prefect_get(f"{stack.api}/deployments/{deployment.info['id']}")["paused"] is True
