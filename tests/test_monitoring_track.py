"""The MONITOR step end to end, with real servers: batches, drift reports, alerts, retraining.

One rendered project (orchestrator=both, notifications=discord) gets `make dev`'s whole
stack on free ports: MLflow, the Prefect server and its process worker, the Dagster
webserver and daemon. The Discord webhook is a local recorder, given to every process
through the environment as a student's .env would.

- Bad input through `python -m <package> monitor` (as `make monitor` runs it): one line
  naming the problem, exit 1, no traceback, and a FAILED monitoring run that says why.
- Prefect: the monitoring flow deployed by part 8 (`monitor-deploy`); the test creates its
  runs on the server, the worker executes them, and on drift the flow itself starts a run
  of the training deployment, which the worker also executes.
- Dagster: the monitoring job (batch predictions and the drift check) run from Dagster's
  CLI; on drift the daemon's sensor launches the training job.

The tests of one module run in order and share the stack: waiting for imports and runs
dominates, so each scenario is started once and its facts are checked by small tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import (
    CANDIDATES,
    DAGSTER_FINAL_STATUSES,
    DEFAULT_PACKAGE,
    PREFECT_FINAL_STATES,
    STRICT_WARNINGS,
    Deadline,
    DevStack,
    ProjectEnv,
    WebhookRecorder,
    champion_version,
    csv_without_column,
    dagster_graphql,
    dagster_runs,
    messages,
    mlflow_api,
    mlflow_search_runs,
    one_line_error,
    prefect_flow_runs,
    prefect_get,
    prefect_post,
    run_metrics,
    sentence_pattern,
    stack_env,
    trained_candidates,
    wait_for_output,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("monitoring")]

MONITORING_EXPERIMENT = "churn-prediction-monitoring"  # MLFLOW_EXPERIMENT_NAME + "-monitoring"
WORKSHOP = "pipelines/workshop/prefect/Prefect_Workshop.py"
DAGSTER_PIPELINE = "pipelines/examples/Dagster_ML_Pipeline.py"
MONITORING_FLOW = "churn-batch-monitoring"
TRAINING_FLOW = "churn-training-pipeline"
SHIFTED = ["tenure_months", "monthly_charges", "total_charges", "contract_type"]
UNTOUCHED = ["age", "support_tickets", "monthly_usage_gb", "payment_method", "internet_service"]


@dataclass
class Stack:
    project: Path
    env: ProjectEnv
    environ: dict[str, str]
    webhook: WebhookRecorder
    batches: Path

    @property
    def mlflow(self) -> str:
        return self.environ["MLFLOW_TRACKING_URI"]

    @property
    def prefect(self) -> str:
        return self.environ["PREFECT_API_URL"]

    @property
    def dagster(self) -> str:
        return f"http://127.0.0.1:{self.environ['DAGSTER_PORT']}"

    def run(self, args: list[str], check: bool = True, **extra: str):
        return self.env.run(args, self.project, timeout=600, check=check, **self.environ, **extra)

    def python(self, *args: str, check: bool = True):
        """A student's command: the project's Python, deprecations as errors."""
        return self.run([str(self.env.python), *STRICT_WARNINGS, *args], check=check)

    def new_batch(self, *flags: str) -> Path:
        self.python("generate_sample_data.py", *flags)
        return sorted(self.batches.glob("batch_*.csv"))[-1]

    def drift_alerts(self) -> list[str]:
        """The Discord messages about drift (each a ``content``, the service's format)."""
        assert all(set(payload) == {"content"} for payload in self.webhook.payloads)
        texts = [payload["content"] for payload in self.webhook.payloads]
        return [text for text in texts if "Data drift on" in text]


# --- Fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(render_project, project_env_for) -> Iterator[Stack]:
    project = render_project("monitoring", orchestrator="both", notifications="discord")
    project_env = project_env_for(project)
    webhook = WebhookRecorder()
    environ = {
        **stack_env("prefect", "dagster"),
        "PREFECT_HOME": str(project / ".workshop" / "client-prefect"),
        "DAGSTER_HOME": str(project / "dagster_home"),
        "DISCORD_WEBHOOK_URL": webhook.url,
    }
    stack = Stack(project, project_env, environ, webhook, project / "data" / "batches")
    stack.python("generate_sample_data.py")
    try:
        with DevStack(project_env, project, **environ):
            yield stack
    finally:
        webhook.close()


def search_monitoring_runs(stack: Stack, filter_string: str = "") -> list[dict]:
    """Runs of the monitoring experiment, newest first (none before it exists)."""
    return mlflow_search_runs(stack.mlflow, MONITORING_EXPERIMENT, filter_string)


def monitoring_runs(stack: Stack, batch: Path) -> list[dict]:
    """The monitoring runs of one batch file."""
    return search_monitoring_runs(stack, f"tags.batch = '{batch.name}'")


def tags_of(run: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}


def artifacts_of(stack: Stack, run: dict) -> set[str]:
    listed = mlflow_api(stack.mlflow, "artifacts/list", run_id=run["info"]["run_id"])
    listed.raise_for_status()
    return {entry["path"] for entry in listed.json().get("files", [])}


def assert_failed_run_says(stack: Stack, batch: Path, expected: str) -> dict:
    [run] = monitoring_runs(stack, batch)
    assert run["info"]["status"] == "FAILED", run["info"]
    assert expected in tags_of(run)["error"], tags_of(run)
    return run


# --- Bad input: `make monitor`, before any model is registered -------------------------


@pytest.fixture(scope="module")
def bad_input(stack: Stack) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    clean = stack.new_batch("--batch")
    bad = stack.project / "bad"
    bad.mkdir()
    empty = bad / "empty.csv"
    empty.write_text("")
    cut = csv_without_column(clean, bad / "no_tenure.csv", "tenure_months")
    cases = {"no champion": clean, "empty": empty, "missing column": cut}
    processes = {
        name: subprocess.Popen(
            [str(stack.env.python), *STRICT_WARNINGS, "-m", DEFAULT_PACKAGE, "monitor"]
            + ["--batch", str(path)],
            cwd=stack.project,
            env=stack.env.environ(stack.project, **stack.environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, path in cases.items()
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=600)  # all at once, on 2 cores
        results[name] = (
            cases[name],
            subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr),
        )
    return results


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no champion", "has the alias 'champion' yet"),
        ("empty", "is empty"),
        ("missing column", "lacks the column(s) the model needs: tenure_months"),
    ],
)
def test_bad_input_is_one_line_and_a_failed_run(stack: Stack, bad_input, case, expected):
    batch, result = bad_input[case]
    assert expected in one_line_error(result)
    assert_failed_run_says(stack, batch, expected)


@pytest.fixture(scope="module")
def champion(stack: Stack, bad_input) -> dict:
    """What the student does before monitoring (here after the no-champion failure)."""
    assert "is the new champion" in stack.python("-m", DEFAULT_PACKAGE, "train").stdout
    return champion_version(stack.mlflow).json()["model_version"]


# --- Prefect: the monitoring deployment of part 8, runs executed by the worker ------------


@dataclass
class MonitoringDeployment:
    process: subprocess.Popen
    log: Path
    monitoring: dict
    training: dict


@pytest.fixture(scope="module")
def deployment(stack: Stack) -> Iterator[MonitoringDeployment]:
    """Part 8's `monitor-deploy`, on a cron that does not tick during the test: the test
    creates the runs itself, one per batch, as the schedule would."""
    log = stack.project / ".workshop" / "monitor-deploy.out"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(stack.env.python), *STRICT_WARNINGS, WORKSHOP, "monitor-deploy"],
            cwd=stack.project,
            env=stack.env.environ(stack.project, **stack.environ, MONITORING_CRON="0 0 1 1 *"),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        watching = messages(stack.project)["prefect"]["deploy"]["watching"]
        wait_for_output(process, log, watching, Deadline.DEPLOYED, "monitor-deploy")
        yield MonitoringDeployment(
            process,
            log,
            prefect_get(f"{stack.prefect}/deployments/name/{MONITORING_FLOW}/batch-monitoring"),
            prefect_get(f"{stack.prefect}/deployments/name/{TRAINING_FLOW}/scheduled-training"),
        )
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_monitoring_deployment(stack: Stack, deployment: MonitoringDeployment, batch: Path) -> dict:
    """Create a run of the monitoring deployment for ``batch``; the worker runs it."""
    response = prefect_post(
        f"{stack.prefect}/deployments/{deployment.monitoring['id']}/create_flow_run",
        {"parameters": {"batch": str(batch)}},
    )
    return wait_prefect_run(stack, response.json()["id"])


def wait_prefect_run(stack: Stack, run_id: str) -> dict:
    def ended() -> dict | None:
        run = prefect_get(f"{stack.prefect}/flow_runs/{run_id}")
        return run if run["state"]["type"] in PREFECT_FINAL_STATES else None

    logs = f"; see {stack.project}/.workshop/logs/prefect-worker.log"
    message = f"flow run {run_id} never ended{logs}"
    return wait_until(ended, Deadline.SCHEDULED_RUN, message, interval=2)


def test_monitoring_is_deployed_beside_the_training_deployment(deployment: MonitoringDeployment):
    monitoring, training = deployment.monitoring, deployment.training
    assert monitoring["entrypoint"].endswith("Prefect_ML_Pipeline.py:batch_monitoring")
    assert [s["schedule"]["cron"] for s in monitoring["schedules"]] == ["0 0 1 1 *"]
    assert monitoring["work_pool_name"] == training["work_pool_name"] == "workshop-pool"
    # Made on demand for the trigger: no schedule, so every training run below is the trigger's.
    assert training["schedules"] == []


@pytest.fixture(scope="module")
def prefect_clean(stack: Stack, deployment: MonitoringDeployment, champion) -> tuple[Path, dict]:
    batch = stack.new_batch("--batch")
    return batch, run_monitoring_deployment(stack, deployment, batch)


def test_prefect_clean_batch_reports_no_drift_and_starts_nothing(stack: Stack, prefect_clean):
    batch, flow_run = prefect_clean
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]
    [run] = monitoring_runs(stack, batch)
    assert run["info"]["status"] == "FINISHED"
    tags = tags_of(run)
    assert tags["prefect_flow_run_id"] == flow_run["id"] and tags["drift_detected"] == "false"
    metrics = run_metrics(run)
    assert metrics["drift_share"] == 0 and metrics["rows"] == 1000
    assert {f"psi_{name}" for name in SHIFTED + UNTOUCHED} <= set(metrics)
    assert "prediction_psi" in metrics
    assert {"drift_report.html", "drift_report.json"} <= artifacts_of(stack, run)
    predictions = stack.project / "data" / "predictions" / f"{batch.stem}_predictions.csv"
    assert predictions.read_text().splitlines()[0].endswith(",prediction")
    assert stack.drift_alerts() == []
    assert prefect_flow_runs(stack.prefect, TRAINING_FLOW) == []


def test_part8_monitors_the_newest_batch_in_the_workshop(stack: Stack, prefect_clean):
    """What a student runs: the same flow in the workshop's process, on the newest batch."""
    batch, _ = prefect_clean
    result = stack.python(WORKSHOP, "part8")
    title = messages(stack.project)["workshop"]["prefect"]["part8"]["title"]
    assert title in result.stdout and f"{batch.name}: no drift" in result.stdout
    assert len(monitoring_runs(stack, batch)) == 2  # the deployment's run, then this one
    assert prefect_flow_runs(stack.prefect, TRAINING_FLOW) == []


@pytest.fixture(scope="module")
def prefect_drift(stack: Stack, deployment: MonitoringDeployment, prefect_clean):
    batch = stack.new_batch("--drift", "0.8")
    return batch, run_monitoring_deployment(stack, deployment, batch)


def test_prefect_drifted_batch_flags_the_shifted_features_only(stack: Stack, prefect_drift):
    batch, flow_run = prefect_drift
    assert flow_run["state"]["type"] == "COMPLETED", flow_run["state"]
    [run] = monitoring_runs(stack, batch)
    tags, metrics = tags_of(run), run_metrics(run)
    assert tags["drift_detected"] == "true"
    assert tags["drifted_features"].split(",") == SHIFTED
    for name in UNTOUCHED:
        assert metrics[f"psi_{name}"] < 0.1, (name, metrics)
    assert metrics["drift_share"] == pytest.approx(len(SHIFTED) / 9)


def test_prefect_drift_alert_arrives_in_discord_format(stack: Stack, prefect_drift):
    batch, _ = prefect_drift
    [alert] = [text for text in stack.drift_alerts() if batch.name in text]
    assert alert.startswith("❌") and "tenure_months" in alert
    assert "Retraining started:" in alert and "/runs/flow-run/" in alert


def test_prefect_drift_starts_training_that_completes_in_mlflow(stack: Stack, prefect_drift):
    """The training run was created by the monitoring run (linked to it), not by the test."""
    _, monitoring_run = prefect_drift
    [training] = prefect_flow_runs(stack.prefect, TRAINING_FLOW)
    parent = prefect_get(f"{stack.prefect}/task_runs/{training['parent_task_run_id']}")
    assert parent["flow_run_id"] == monitoring_run["id"]
    assert "drift" in training["tags"]
    finished = wait_prefect_run(stack, training["id"])
    assert finished["state"]["type"] == "COMPLETED", finished["state"]
    logged = trained_candidates(stack.mlflow, "prefect_flow_run_id", training["id"])
    assert logged == CANDIDATES


@pytest.fixture(scope="module")
def prefect_bad(stack: Stack, deployment: MonitoringDeployment, prefect_drift):
    source = stack.batches / "batch_001.csv"
    batch = csv_without_column(source, stack.project / "bad" / "no_contract.csv", "contract_type")
    return batch, run_monitoring_deployment(stack, deployment, batch)


def test_prefect_bad_batch_fails_the_flow_run_and_the_mlflow_run(stack: Stack, prefect_bad):
    batch, flow_run = prefect_bad
    expected = "lacks the column(s) the model needs: contract_type"
    assert flow_run["state"]["type"] == "FAILED"
    assert expected in flow_run["state"]["message"]
    assert_failed_run_says(stack, batch, expected)


def test_monitor_deploy_stops_on_ctrl_c(
    stack: Stack, deployment: MonitoringDeployment, prefect_bad
):
    deployment.process.send_signal(signal.SIGINT)
    assert deployment.process.wait(timeout=30) == 0
    paused = messages(stack.project)["prefect"]["schedule"]["paused"]
    assert sentence_pattern(paused).search(deployment.log.read_text())


# --- Dagster: batch predictions, the drift check, the retraining sensor --------------------

SENSOR_TICKS = """
{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError {
  ... on RepositoryLocation { repositories { sensors { name sensorState { ticks(limit: 1) {
  status } } } } } } } } } }
"""
CHECK_QUERY = """
query($checkName: String!) {
  assetCheckExecutions(assetKey: {path: ["batch_predictions"]}, checkName: $checkName, limit: 10) {
    runId status evaluation { success description } } }
"""


def sensor_ticked(stack: Stack, name: str) -> bool:
    data = dagster_graphql(stack.dagster, SENSOR_TICKS)["workspaceOrError"]
    for entry in data["locationEntries"]:
        for repository in entry["locationOrLoadError"].get("repositories", []):
            for sensor in repository["sensors"]:
                if sensor["name"] == name and sensor["sensorState"]["ticks"]:
                    return True
    return False


def dagster_monitoring(stack: Stack, tag: str) -> dict:
    """The monitoring job from Dagster's CLI, as `make` runs Dagster jobs; returns its run."""
    stack.run(
        [str(stack.env.bin / "dagster"), "job", "execute", "-f", DAGSTER_PIPELINE, "-d", "src"]
        + ["-j", "churn_monitoring_job", "--tags", json.dumps({"test": tag})],
        check=False,
    )
    [run] = dagster_runs(stack.dagster, "test", tag)
    return run


def drift_check(stack: Stack, run_id: str) -> dict:
    data = dagster_graphql(stack.dagster, CHECK_QUERY, checkName="batch_has_not_drifted")
    [execution] = [e for e in data["assetCheckExecutions"] if e["runId"] == run_id]
    return execution


@pytest.fixture(scope="module")
def dagster_scenarios(stack: Stack, prefect_bad) -> dict[str, tuple[Path, dict]]:
    """A clean batch, then a drifted one, then one missing a column, each the newest."""
    message = "the sensor never ticked"
    wait_until(lambda: sensor_ticked(stack, "retrain_on_drift"), Deadline.SERVER_UP, message)
    scenarios = {}
    for name, flags in (("clean", ["--batch"]), ("drift", ["--drift", "0.8"])):
        batch = stack.new_batch(*flags)
        scenarios[name] = (batch, dagster_monitoring(stack, name))
    newest = stack.batches / f"batch_{int(batch.stem.split('_')[1]) + 1:03d}.csv"
    csv_without_column(batch, newest, "monthly_charges")
    scenarios["missing column"] = (newest, dagster_monitoring(stack, "missing-column"))
    return scenarios


def test_dagster_clean_batch_passes_the_drift_check(stack: Stack, dagster_scenarios):
    batch, run = dagster_scenarios["clean"]
    assert run["status"] == "SUCCESS", run
    assert drift_check(stack, run["runId"])["status"] == "SUCCEEDED"
    [logged] = monitoring_runs(stack, batch)
    assert tags_of(logged)["dagster_run_id"] == run["runId"]
    assert tags_of(logged)["drift_detected"] == "false"
    assert "drift_report.html" in artifacts_of(stack, logged)
    assert not [text for text in stack.drift_alerts() if batch.name in text]


def test_dagster_drifted_batch_fails_the_check_and_alerts(stack: Stack, dagster_scenarios):
    batch, run = dagster_scenarios["drift"]
    assert run["status"] == "SUCCESS", run  # a failed check reports; it does not fail the run
    check = drift_check(stack, run["runId"])
    assert check["status"] == "FAILED" and "DRIFT" in check["evaluation"]["description"]
    [logged] = monitoring_runs(stack, batch)
    assert tags_of(logged)["drifted_features"].split(",") == SHIFTED
    [alert] = [text for text in stack.drift_alerts() if batch.name in text]
    assert alert.startswith("❌") and "retrain_on_drift" in alert


def test_dagster_sensor_retrains_once_and_only_on_drift(stack: Stack, dagster_scenarios):
    _, drifted = dagster_scenarios["drift"]
    triggered = wait_until(
        lambda: dagster_runs(stack.dagster, "trigger", "drift"),
        Deadline.SCHEDULE_LAUNCH,
        "the retrain_on_drift sensor launched no training run",
        interval=2,
    )
    [training] = triggered  # the clean batch's run started nothing
    assert training["jobName"] == "churn_training_job"
    [tagged] = dagster_runs(stack.dagster, "monitoring_run", drifted["runId"])
    assert tagged["runId"] == training["runId"]

    def finished() -> dict | None:
        [run] = dagster_runs(stack.dagster, "trigger", "drift")
        return run if run["status"] in DAGSTER_FINAL_STATUSES else None

    message = "the training run never finished"
    done = wait_until(finished, Deadline.SCHEDULED_RUN, message, interval=2)
    assert done["status"] == "SUCCESS", done
    assert trained_candidates(stack.mlflow, "dagster_run_id", training["runId"]) == CANDIDATES


def test_dagster_bad_batch_fails_the_run_and_the_mlflow_run(stack: Stack, dagster_scenarios):
    batch, run = dagster_scenarios["missing column"]
    assert run["status"] == "FAILURE", run
    assert_failed_run_says(stack, batch, "lacks the column(s) the model needs: monthly_charges")


def test_no_monitoring_run_is_left_running(stack: Stack, dagster_scenarios):
    statuses = [run["info"]["status"] for run in search_monitoring_runs(stack)]
    assert "RUNNING" not in statuses and statuses.count("FAILED") == 5, statuses
