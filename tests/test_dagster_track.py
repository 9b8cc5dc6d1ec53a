"""The Dagster track end to end, with real processes.

For a render with ``orchestrator=dagster`` (Discord notifications), ``make dev``'s
MLflow server, Dagster webserver, code servers and daemon run on free ports. The tests
then check, through the webserver's GraphQL API (as the UI sees it), MLflow's REST API and a local
webhook server: the definitions load; a CLI run materializes every asset, passes
the checks and logs to MLflow; the workshop script materializes in-process; a file
without the target column fails the checks with a message naming the column; the
schedule, turned on through the API, fires by itself and its run lands in MLflow;
success and failure notifications arrive in the service's format.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import (
    CANDIDATES,
    DAGSTER_EXERCISE,
    DAGSTER_EXERCISE_LOCATION,
    DAGSTER_FINAL_STATUSES,
    DAGSTER_SOLUTION,
    DAGSTER_SOLUTION_LOCATION,
    DEFAULT_PACKAGE,
    STRICT_WARNINGS,
    Deadline,
    DevStack,
    Facts,
    ProjectEnv,
    WebhookRecorder,
    assert_check_report,
    champion_version,
    csv_without_column,
    dagster_exercise_report,
    dagster_graphql,
    dagster_runs,
    make_commands,
    materialize_the_solved_exercise,
    mlflow_runs_tagged,
    one_line_error,
    places_holding,
    record_fault,
    stack_env,
    trained_candidates,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("dagster")]

LOCATION = "churn_pipeline"  # the reference pipeline: assets, checks, schedule, sensors
WORKSHOP_LOCATION = "churn_workshop"  # part 1's task-style job
REPOSITORY = "__repository__"
JOB = "churn_training_job"
SCHEDULE = "churn_training_schedule"
SENSORS = {"notify_on_success", "notify_on_failure", "retrain_on_drift"}
CHECKS = ["has_expected_columns", "target_has_no_missing_values", "churn_rate_is_plausible"]
WORKSHOP = "pipelines/workshop/dagster/Dagster_Workshop.py"
PIPELINE = "pipelines/examples/Dagster_ML_Pipeline.py"
TARGET = "churned"

# The `dagster` render only: the `both` render has the same Dagster files, and its stack,
# with every server at once, runs in test_monitoring_track.py and in the Docker test.
# Slack's format is one module for both orchestrators, and test_prefect_track.py gets it.
# The teacher's copy: the exercise's solution is a code location of its own.
ANSWERS = {"orchestrator": "dagster", "notifications": "discord", "include_solutions": True}


@dataclass
class DagsterProject:
    project: Path
    env: ProjectEnv
    webhook: WebhookRecorder
    stack_env: dict[str, str]
    dagster_url: str
    mlflow_url: str
    schedule_started_at: float | None = None
    facts: Facts = field(default_factory=Facts)
    stack: DevStack | None = None  # its `make dev`

    def graphql(self, query: str, **variables: object) -> dict:
        return dagster_graphql(self.dagster_url, query, **variables)

    def dagster_cli(self, *args: str, check: bool = True, **env: str):
        """``dagster`` with the project's DAGSTER_HOME and servers, as ``make`` runs it."""
        return self.env.run(
            [str(self.env.bin / "dagster"), *args],
            self.project,
            timeout=900,  # a whole multiprocess run on a loaded 2-core machine
            check=check,
            DAGSTER_HOME=str(self.project / "dagster_home"),
            **{**self.stack_env, **env},
        )

    def execute_job(self, tag: str, check: bool = True, **env: str):
        return self.dagster_cli(
            "job",
            "execute",
            "-f",
            PIPELINE,
            "-d",
            "src",
            "-j",
            JOB,
            "--tags",
            json.dumps({"test": tag}),
            check=check,
            **env,
        )

    def runs(self, tag_key: str, tag_value: str) -> list[dict]:
        return dagster_runs(self.dagster_url, tag_key, tag_value)

    def check_evaluation(self, check_name: str, run_id: str) -> dict | None:
        data = self.graphql(
            CHECK_QUERY, assetKey={"path": ["raw_customer_data"]}, checkName=check_name
        )
        for execution in data["assetCheckExecutions"]:
            if execution["runId"] == run_id:
                return execution
        return None

    def mlflow_runs(self, dagster_run_id: str) -> list[dict]:
        return mlflow_runs_tagged(self.mlflow_url, "dagster_run_id", dagster_run_id)

    def notification_texts(self) -> list[str]:
        """The text of each notification, checking Discord's payload format."""
        for payload in self.webhook.payloads:
            assert set(payload) == {"content"}, payload
        return [payload["content"] for payload in self.webhook.payloads]

    def notification_about(self, run_id: str, icon: str) -> str | None:
        return next(
            (text for text in self.notification_texts() if run_id[:8] in text and icon in text),
            None,
        )


WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on PythonError { message }
  ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename
    ... on PythonError { message stack }
    ... on RepositoryLocation { repositories { name
      jobs { name }
      assetNodes { assetKey { path } }
      schedules { name cronSchedule scheduleState { status } }
      sensors { name sensorState { status ticks(limit: 1) { status } } } } } } } } } }
"""
SCHEDULE_SELECTOR = {
    "repositoryLocationName": LOCATION,
    "repositoryName": REPOSITORY,
    "scheduleName": SCHEDULE,
}
START_SCHEDULE = """
mutation($selector: ScheduleSelector!) { startSchedule(scheduleSelector: $selector) {
  __typename ... on ScheduleStateResult { scheduleState { status } }
  ... on PythonError { message } } }
"""
RESET_SCHEDULE = """
mutation($selector: ScheduleSelector!) { resetSchedule(scheduleSelector: $selector) {
  __typename } }
"""
ACTIVE_RUNS_QUERY = """
{ runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}) {
  ... on Runs { results { runId } } } }
"""
RELOAD_LOCATION = """
mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) {
  __typename ... on WorkspaceLocationEntry { locationOrLoadError { __typename } } } }
"""
TERMINATE_RUNS = """
mutation($ids: [String!]!) { terminateRuns(runIds: $ids) { __typename } }
"""
CHECK_QUERY = """
query($assetKey: AssetKeyInput!, $checkName: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: 10) {
    runId status evaluation { success description } } }
"""


def workspace_repositories(project: DagsterProject) -> dict[str, dict]:
    """Each code location's repository, by location name; every location must load."""
    entries = project.graphql(WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
    assert [entry["name"] for entry in entries] == [
        LOCATION,
        WORKSHOP_LOCATION,
        DAGSTER_EXERCISE_LOCATION,
        DAGSTER_SOLUTION_LOCATION,
    ]
    repositories = {}
    for entry in entries:
        location = entry["locationOrLoadError"]
        assert location["__typename"] == "RepositoryLocation", location
        repositories[entry["name"]] = location["repositories"][0]
    return repositories


def locations_loaded(project: DagsterProject) -> bool:
    """The webserver reached every code server (it retries one that came up after it)."""
    entries = project.graphql(WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
    return all(e["locationOrLoadError"]["__typename"] == "RepositoryLocation" for e in entries)


def workspace_repository(project: DagsterProject) -> dict:
    return workspace_repositories(project)[LOCATION]


def sensors_initialized(project: DagsterProject) -> bool:
    """Run status sensors only report runs that end after their first tick. (Until the
    code servers are up, the webserver shows their locations as unreachable: not yet.)"""
    if not locations_loaded(project):
        return False
    sensors = workspace_repository(project)["sensors"]
    return {s["name"] for s in sensors if s["sensorState"]["ticks"]} == SENSORS


def prepare_project(render_project, project_env_for) -> DagsterProject:
    # As deep as a project in a student's Documents folder can be: no socket path may
    # then fit under it (a Unix socket's path has 107 bytes at most).
    project = render_project("dagster-" + "deep-in-a-students-documents-folder-" * 2, **ANSWERS)
    project_env = project_env_for(project)
    project_env.run(
        [str(project_env.python), "-m", DEFAULT_PACKAGE, "generate-data", "--rows", "2000"],
        project,
    )
    csv_without_column(project / "data/customer_data.csv", project / "data/no_target.csv", TARGET)
    webhook = WebhookRecorder()
    servers = stack_env("dagster")
    environment = {**servers, "DISCORD_WEBHOOK_URL": webhook.url}
    return DagsterProject(
        project,
        project_env,
        webhook,
        environment,
        dagster_url=f"http://127.0.0.1:{servers['DAGSTER_PORT']}",
        mlflow_url=servers["MLFLOW_TRACKING_URI"],
    )


def start_stack(project: DagsterProject, cleanup: contextlib.ExitStack) -> None:
    """``make dev`` with MLflow and Dagster only, then wait for the sensors' first tick."""
    stack = DevStack(
        project.env,
        project.project,
        only=[
            "mlflow",
            "dagster-webserver",
            "dagster-pipeline-code",
            "dagster-workshop-code",
            "dagster-exercises-code",
            "dagster-exercises-solution-code",
            "dagster-daemon",
        ],
        SCHEDULE_CRON="* * * * *",
        **project.stack_env,
    )
    cleanup.push(stack.__exit__)  # also stops a stack that failed to come up
    project.stack = stack.__enter__()
    cleanup.callback(stop_schedule_and_runs, project)
    # The code servers load both code locations first: minutes on a loaded 2-core machine.
    wait_until(lambda: sensors_initialized(project), Deadline.SERVER_UP, "the sensors never ticked")


@pytest.fixture(scope="module")
def dagster_project(render_project, project_env_for) -> Iterator[DagsterProject]:
    """The project's `make dev`, started once for the module."""
    project = prepare_project(render_project, project_env_for)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(project.webhook.close)
        start_stack(project, cleanup)
        yield project


def stop_schedule_and_runs(project: DagsterProject) -> None:
    """Leave no run behind: a run in flight would outlive the stack by a minute."""
    project.graphql(RESET_SCHEDULE, selector=SCHEDULE_SELECTOR)
    active = project.graphql(ACTIVE_RUNS_QUERY)["runsOrError"]["results"]
    if active:
        project.graphql(TERMINATE_RUNS, ids=[run["runId"] for run in active])


def test_definitions_load_without_errors(dagster_project: DagsterProject) -> None:
    repository = workspace_repository(dagster_project)
    assets = {"/".join(node["assetKey"]["path"]) for node in repository["assetNodes"]}
    assert assets == {
        "raw_customer_data",
        "customer_features",
        "logistic_regression_model",
        "random_forest_model",
        "gradient_boosting_model",
        "best_model",
        "batch_predictions",  # monitoring (tests/test_monitoring_track.py)
    }
    assert JOB in {job["name"] for job in repository["jobs"]}
    workshop = workspace_repositories(dagster_project)[WORKSHOP_LOCATION]
    assert [job["name"] for job in workshop["jobs"]] == ["churn_training_task_style"]
    assert workshop["assetNodes"] == [] and workshop["schedules"] == []
    schedules = {schedule["name"]: schedule for schedule in repository["schedules"]}
    assert set(schedules) == {SCHEDULE, "churn_monitoring_schedule"}
    schedule = schedules[SCHEDULE]
    assert schedule["cronSchedule"] == "* * * * *"  # SCHEDULE_CRON from the environment wins
    assert schedule["scheduleState"]["status"] == "STOPPED"  # the student turns it on
    assert {s["sensorState"]["status"] for s in repository["sensors"]} == {"RUNNING"}


class TestExercise:
    """The broken asset graph, as a class mends it: the check asks the running Dagster."""

    def check(self, project: DagsterProject, script: str) -> subprocess.CompletedProcess:
        return project.env.run(
            [str(project.env.python), script, "check"],
            project.project,
            check=False,
            **project.stack_env,
        )

    def reload(self, project: DagsterProject, location: str) -> str:
        """The UI's Reload; returns how the location loaded."""
        entry = project.graphql(RELOAD_LOCATION, name=location)["reloadRepositoryLocation"]
        return entry["locationOrLoadError"]["__typename"]

    def test_the_untouched_file_loads_and_fails_every_other_point(self, dagster_project):
        result = self.check(dagster_project, DAGSTER_EXERCISE)
        assert_check_report(result, dagster_exercise_report(dagster_project.project, "✓✗✗✗✗✗"))

    def test_the_solution_materialized_as_the_ui_does_passes_every_point(self, dagster_project):
        materialize_the_solved_exercise(dagster_project.dagster_url)
        result = self.check(dagster_project, DAGSTER_SOLUTION)
        assert_check_report(result, dagster_exercise_report(dagster_project.project, "✓✓✓✓✓✓"))

    def test_the_graph_mends_on_reload(self, dagster_project):
        """A misspelled dependency breaks the location and the check names it; the solved
        code, once reloaded, shows its edges (nothing materialized yet under this prefix)."""
        exercise = dagster_project.project / DAGSTER_EXERCISE
        untouched = exercise.read_text()
        misspelled = (
            "\n\n@asset(key_prefix=PREFIX)\n"
            "def candidate_scores(customer_featurez: DataSplit) -> int:\n"
            "    return 1\n\n\n"
            "defs = Definitions(assets=[raw_customers, customer_features, candidate_scores])\n"
        )
        try:
            exercise.write_text(untouched + misspelled)
            assert self.reload(dagster_project, DAGSTER_EXERCISE_LOCATION) == "PythonError"
            broken = self.check(dagster_project, DAGSTER_EXERCISE)
            assert_check_report(broken, dagster_exercise_report(dagster_project.project, "✗✗✗✗✗✗"))
            exercise.write_text((dagster_project.project / DAGSTER_SOLUTION).read_text())
            assert self.reload(dagster_project, DAGSTER_EXERCISE_LOCATION) == "RepositoryLocation"
            mended = self.check(dagster_project, DAGSTER_EXERCISE)
            assert_check_report(mended, dagster_exercise_report(dagster_project.project, "✓✓✓✗✗✗"))
        finally:
            exercise.write_text(untouched)
            self.reload(dagster_project, DAGSTER_EXERCISE_LOCATION)


def test_turning_the_schedule_on(dagster_project: DagsterProject) -> None:
    """With the verb the guide gives, on the native stack (DAGSTER_IN_DOCKER emptied,
    whatever Docker runs); the scheduled run is checked last, while other tests run.

    Its last command only: the first writes .env, which Dagster's CLI would then load over
    the environment the tests give their commands (their ports, their DATA_PATH).
    """
    python = str(dagster_project.env.python)
    *_, turn_on = make_commands(
        dagster_project.project, "dagster-schedule-on", PYTHON=python, DAGSTER_IN_DOCKER=""
    )
    assert ".workshop/workspace.yaml" in turn_on, turn_on  # make dev's sockets, in /tmp
    dagster_project.env.run(["bash", "-c", turn_on], dagster_project.project)
    schedules = workspace_repository(dagster_project)["schedules"]
    [state] = [s["scheduleState"]["status"] for s in schedules if s["name"] == SCHEDULE]
    assert state == "RUNNING"
    dagster_project.schedule_started_at = time.monotonic()


def test_cli_materializes_all_assets_checks_pass_and_mlflow_gets_runs(
    dagster_project: DagsterProject,
) -> None:
    dagster_project.execute_job("cli")
    [run] = dagster_project.runs("test", "cli")
    assert run["status"] == "SUCCESS"
    for check in CHECKS:
        execution = dagster_project.check_evaluation(check, run["runId"])
        assert execution and execution["status"] == "SUCCEEDED", (check, execution)
    logged = trained_candidates(dagster_project.mlflow_url, "dagster_run_id", run["runId"])
    assert logged == CANDIDATES
    alias = champion_version(dagster_project.mlflow_url)
    assert alias.status_code == 200, alias.text
    dagster_project.facts["cli_run"] = run["runId"]


SCRIPTS = {
    # the script run in-process, and what its output must show
    "part1": (WORKSHOP, "churn_training_task_style"),  # ops in a job
    "part2": (PIPELINE, "customer_features            <- raw_customer_data"),  # lineage
}


@pytest.mark.parametrize("part", list(SCRIPTS))
def test_scripts_run_in_process_without_deprecations(
    dagster_project: DagsterProject, part: str
) -> None:
    """Part 1's task-style job and the reference's assets: one in-process run logged to MLflow."""
    script, shown = SCRIPTS[part]
    result = dagster_project.env.run(
        [str(dagster_project.env.python), *STRICT_WARNINGS, script],
        dagster_project.project,
        timeout=900,
        DAGSTER_HOME=str(dagster_project.project / "dagster_home"),
        **dagster_project.stack_env,
    )
    assert shown in result.stdout + result.stderr
    assert re.search(
        r"churn-classifier version \d+ (is the new|did not beat the) champion", result.stdout
    )


def test_a_cron_dagster_refuses_names_its_env_variable(dagster_project: DagsterProject) -> None:
    """A typo in SCHEDULE_CRON stops the script with the .env line to fix, not a traceback."""
    result = dagster_project.env.run(
        [str(dagster_project.env.python), PIPELINE],
        dagster_project.project,
        check=False,
        timeout=300,
        DAGSTER_HOME=str(dagster_project.project / "dagster_home"),
        **{**dagster_project.stack_env, "SCHEDULE_CRON": "61 * * * *"},
    )
    error = one_line_error(result)
    assert "SCHEDULE_CRON='61 * * * *'" in error and ".env" in error, error


def test_data_without_target_fails_the_checks_naming_the_column(
    dagster_project: DagsterProject,
) -> None:
    result = dagster_project.execute_job(
        "no-target", check=False, DATA_PATH=str(dagster_project.project / "data/no_target.csv")
    )
    assert result.returncode != 0
    [run] = dagster_project.runs("test", "no-target")
    assert run["status"] == "FAILURE"
    for check in CHECKS:
        execution = dagster_project.check_evaluation(check, run["runId"])
        assert execution and execution["status"] == "FAILED", (check, execution)
        assert f"{TARGET}" in execution["evaluation"]["description"], execution
    assert dagster_project.mlflow_runs(run["runId"]) == []  # nothing trained on bad data
    dagster_project.facts["failed_run"] = run["runId"]


def test_failure_notification_names_the_problem(dagster_project: DagsterProject) -> None:
    run_id = dagster_project.facts["failed_run"]
    text = wait_until(
        lambda: dagster_project.notification_about(run_id, "❌"),
        Deadline.NOTIFIED,
        f"no failure notification for run {run_id}: {dagster_project.webhook.payloads}",
    )
    assert "failed" in text
    assert f"Missing column(s): {TARGET}" in text


def test_scheduled_run_succeeds_by_itself_and_lands_in_mlflow(
    dagster_project: DagsterProject,
) -> None:
    assert dagster_project.schedule_started_at is not None, "the schedule was never turned on"
    # The launch deadline runs from when the schedule was turned on (other tests ran since),
    # and still leaves the daemon one more tick.
    since_on = time.monotonic() - dagster_project.schedule_started_at
    launch_within = max(Deadline.SCHEDULE_LAUNCH - since_on, 60)

    def scheduled_runs() -> list[dict]:
        return dagster_project.runs("dagster/schedule_name", SCHEDULE)

    def finished(run_id: str) -> dict | None:
        run = next((r for r in scheduled_runs() if r["runId"] == run_id), None)
        return run if run and run["status"] in DAGSTER_FINAL_STATUSES else None

    first = wait_until(
        lambda: next(reversed(scheduled_runs()), None),  # the oldest: runs come newest first
        launch_within,
        f"{SCHEDULE} launched no run in the {since_on + launch_within:.0f} s since it was on",
        interval=2,
    )
    # Off again once it has fired: a run a minute would queue up behind the ones still
    # training on a busy machine and slow everything else down.
    dagster_project.graphql(RESET_SCHEDULE, selector=SCHEDULE_SELECTOR)
    run = wait_until(
        lambda: finished(first["runId"]), Deadline.SCHEDULED_RUN, "the scheduled run never finished"
    )
    assert run["status"] == "SUCCESS", run
    run_id = run["runId"]
    assert trained_candidates(dagster_project.mlflow_url, "dagster_run_id", run_id) == CANDIDATES
    dagster_project.facts["scheduled_run"] = run_id


def test_success_notifications_arrive_in_the_service_format(
    dagster_project: DagsterProject,
) -> None:
    """For the scheduled run, and for the CLI run (which belongs to no code location)."""
    run_ids = [dagster_project.facts["scheduled_run"], dagster_project.facts["cli_run"]]
    for run_id in run_ids:
        text = wait_until(
            lambda run_id=run_id: dagster_project.notification_about(run_id, "✅"),
            Deadline.NOTIFIED,
            f"no success notification for run {run_id}: {dagster_project.webhook.payloads}",
        )
        assert "succeeded" in text


def test_the_webhook_url_is_written_nowhere(dagster_project: DagsterProject) -> None:
    """A secret: not in a log, a run's config or tags, MLflow's database or a project file."""
    assert dagster_project.webhook.payloads, "the URL was used: notifications went out"
    assert places_holding(dagster_project.project, dagster_project.webhook.url) == []


MATERIALIZATIONS_QUERY = """
query($assetKey: AssetKeyInput!) { assetOrError(assetKey: $assetKey) {
  ... on Asset { assetMaterializations(limit: 1000) { runId } } } }
"""


def history(project: DagsterProject) -> dict[str, object]:
    """What a restart must keep: the schedule's state, the runs, the materializations."""
    schedules = workspace_repository(project)["schedules"]
    materializations = project.graphql(MATERIALIZATIONS_QUERY, assetKey={"path": ["best_model"]})
    return {
        "schedule": next(s for s in schedules if s["name"] == SCHEDULE)["scheduleState"],
        "runs": {
            run["runId"]: run["status"] for run in project.runs("dagster/schedule_name", SCHEDULE)
        },
        "best_model": {
            m["runId"] for m in materializations["assetOrError"]["assetMaterializations"]
        },
    }


def test_a_restart_keeps_the_schedule_runs_and_materializations(
    dagster_project: DagsterProject, record_property
) -> None:
    """Ctrl+C on `make dev`, then `make dev` again: the webserver and the daemon come back
    to the same DAGSTER_HOME, the schedule still on."""
    started = dagster_project.graphql(START_SCHEDULE, selector=SCHEDULE_SELECTOR)
    assert started["startSchedule"]["scheduleState"]["status"] == "RUNNING", started
    before = history(dagster_project)
    assert before["schedule"]["status"] == "RUNNING" and before["runs"] and before["best_model"]
    dagster_project.stack.__exit__(None, None, None)
    stopped = time.monotonic()
    dagster_project.stack.__enter__()
    message = "the UI lost its code locations"
    wait_until(lambda: locations_loaded(dagster_project), Deadline.SERVER_UP, message)
    record_fault(record_property, "Dagster restarted", back_up_after=time.monotonic() - stopped)
    after = history(dagster_project)
    assert after["schedule"] == before["schedule"]
    ended = {
        run: status for run, status in before["runs"].items() if status in DAGSTER_FINAL_STATUSES
    }
    assert ended.items() <= after["runs"].items()
    assert before["best_model"] <= after["best_model"]
