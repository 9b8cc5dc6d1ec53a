"""The Airflow reference DAG run for real, as a student runs it, and its two files.

One rendered project gets its Airflow environment from the commands of `make airflow-env`
(read with `make -n` and run one at a time, so the install and the database migration are
timed apart): uv, `apache-airflow` at the pinned version and the project, in `.venv-airflow`,
on the Python the answers name. It is built once per test session, under a file lock,
like conftest's project environment. A real MLflow server, started as `make dev --only
mlflow` starts it, takes the runs of `make airflow-test`'s `airflow dags test`, started from
a folder outside the project so the DAG has to find the project by itself. The assertions
read what Airflow's database and the MLflow server hold afterwards.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

from helpers import (
    DEFAULT_PACKAGE,
    DevStack,
    answered_python,
    champion_version,
    copier_default,
    make_commands,
    mlflow_runs_tagged,
    render,
    shared_tmp,
    stack_env,
    succeeded,
    uv_executable,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("airflow")]

AIRFLOW_VERSION = "3.3.2"
DAG_ID = "churn_training"
DAG = "pipelines/examples/Airflow_ML_Pipeline.py"
OVERVIEW = "pipelines/workshop/airflow/airflow_overview.md"
# Prefect cannot share Airflow's environment; a time zone other than UTC reaches the schedule.
ANSWERS = {"orchestrator": "prefect", "schedule_timezone": "Europe/Paris"}
ENV_STEPS = ("venv", "install", "migrate")  # what `make airflow-env` runs, in that order

# How Airflow itself parses a DAG file (the DAG processor's DagBag), every warning recorded.
PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
dag = bag.dags.get("churn_training")
print(json.dumps({
    "schedule": {
        "expression": dag.timetable.expression,
        "timezone": str(dag.timetable.timezone),
    } if dag else None,
    "dags": sorted(bag.dag_ids),
    "errors": bag.import_errors,
    "warnings": {path: list(found) for path, found in bag.captured_warnings.items()},
    "tasks": {
        task.task_id: {
            "setup": task.is_setup,
            "teardown": task.is_teardown,
            "mapped": task.is_mapped,
            "upstream": sorted(task.upstream_task_ids),
        }
        for task in (dag.tasks if dag else [])
    },
}))
"""


@dataclass
class AirflowProject:
    path: Path
    python: Path
    timings: dict[str, float]

    @property
    def home(self) -> Path:
        return self.path / ".workshop" / "airflow"


@dataclass
class DagRun:
    project: AirflowProject
    output: str
    seconds: float
    tracking_uri: str

    def query(self, sql: str) -> list[tuple]:
        """Rows of Airflow's metadata database (SQLite under AIRFLOW_HOME)."""
        with sqlite3.connect(self.project.home / "airflow.db") as database:
            return database.execute(sql).fetchall()


# --- Helpers -------------------------------------------------------------------------


def clean_environ(**extra: str) -> dict[str, str]:
    """The environment a student's shell would have: no server URLs, no AIRFLOW_* or
    PROJECT_ROOT from elsewhere, no pyenv pin, and uv on PATH."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("PREFECT_", "MLFLOW_", "DAGSTER_", "AIRFLOW", "PROJECT_ROOT", "PYENV_VERSION")
        )
        and key != "VIRTUAL_ENV"
    }
    env["PATH"] = f"{Path(uv_executable()).parent}{os.pathsep}{env.get('PATH', '')}"
    return env | extra


def run_step(command: str, cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Run one command as make does (``/bin/sh -c``); return its time and its output."""
    start = time.monotonic()
    result = subprocess.run(
        ["/bin/sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    seconds = time.monotonic() - start
    succeeded(result)
    return seconds, result.stdout + result.stderr


def airflow_python(project: AirflowProject, code: str, *args: str) -> str:
    result = subprocess.run(
        [str(project.python), "-W", "always", "-c", code, *args],
        cwd=project.path,
        env=clean_environ(AIRFLOW_HOME=str(project.home)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return succeeded(result).stdout.splitlines()[-1]  # Airflow may log on stdout before the answer


# --- Fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_project(
    template_dir: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> AirflowProject:
    """The rendered project with its .venv-airflow, built by `make airflow-env`'s commands."""
    shared = shared_tmp(tmp_path_factory, worker_id)
    project = shared / "airflow-project"
    ready = project / ".venv-airflow" / "ready"
    with FileLock(str(shared / "airflow-project.lock")):
        if not ready.exists():
            shutil.rmtree(project, ignore_errors=True)
            render(template_dir, project, **ANSWERS)
            steps = make_commands(project, "airflow-env")
            assert steps[0].startswith("uv venv") and "uv pip install" in steps[1], steps
            assert f'"apache-airflow=={AIRFLOW_VERSION}" -e .' in steps[1], steps
            assert steps[2].endswith("airflow db migrate"), steps
            timings = {
                name: run_step(command, project, clean_environ())[0]
                for name, command in zip(ENV_STEPS, steps, strict=True)
            }
            ready.write_text(json.dumps(timings))
    return AirflowProject(
        project, project / ".venv-airflow/bin/python", json.loads(ready.read_text())
    )


@pytest.fixture(scope="module")
def dag_run(
    airflow_project: AirflowProject,
    project_env_for,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[DagRun]:
    """`make data`, MLflow as `make dev --only mlflow` starts it, then `make airflow-test`'s
    commands: the first (.env) in the project, `airflow dags test` from another folder."""
    project = airflow_project.path
    project_env = project_env_for(project)
    env = stack_env()
    project_env.run(["make", "data"], project)
    with DevStack(project_env, project, only=["mlflow"], **env):
        prerequisite, dags_test = make_commands(project, "airflow-test")
        run_step(prerequisite, project, clean_environ())
        elsewhere = tmp_path_factory.mktemp("elsewhere")
        seconds, output = run_step(
            dags_test, elsewhere, clean_environ(MLFLOW_TRACKING_URI=env["MLFLOW_TRACKING_URI"])
        )
        yield DagRun(airflow_project, output, seconds, env["MLFLOW_TRACKING_URI"])


# --- The Airflow environment and the DAG's parse -------------------------------------


def test_airflow_has_its_own_pinned_environment(airflow_project: AirflowProject):
    """`make airflow-env`: the answered Python, Airflow at the pin, the project, no Prefect."""
    facts = json.loads(
        airflow_python(
            airflow_project,
            "import json, sys, importlib.metadata as m, importlib.util as u\n"
            "print(json.dumps({'python': '%d.%d' % sys.version_info[:2],"
            " 'airflow': m.version('apache-airflow'),"
            f" 'package': bool(u.find_spec('{DEFAULT_PACKAGE}')),"
            " 'prefect': bool(u.find_spec('prefect'))}))",
        )
    )
    assert facts == {
        "python": answered_python(airflow_project.path),
        "airflow": AIRFLOW_VERSION,
        "package": True,
        "prefect": False,
    }
    assert ".venv-airflow/\n" in (airflow_project.path / ".gitignore").read_text()
    assert (airflow_project.home / "airflow.db").is_file()  # migrated by make airflow-env


def test_dag_parses_without_errors_or_warnings(airflow_project: AirflowProject):
    """Airflow's own parser (DagBag) on the DAGs folder of the make verbs, warnings recorded."""
    parsed = json.loads(airflow_python(airflow_project, PARSE, str(airflow_project.path / DAG)))
    assert parsed["dags"] == [DAG_ID]
    assert parsed["errors"] == {}
    assert parsed["warnings"] == {}
    # The answers' cron and time zone (Europe/Paris here): the timetable Airflow built.
    schedule = parsed["schedule"]
    expected = (copier_default("schedule_cron"), ANSWERS["schedule_timezone"])
    assert (schedule["expression"], schedule["timezone"]) == expected
    tasks = parsed["tasks"]
    assert tasks["prepare_split"]["setup"] and tasks["remove_split"]["teardown"]
    assert set(tasks["remove_split"]["upstream"]) == {"prepare_split", "promote_best"}
    assert tasks["train_candidate"]["mapped"]


# --- One run of `airflow dags test` ---------------------------------------------------


def test_every_task_succeeds(dag_run: DagRun):
    timings = dag_run.project.timings
    print(
        f"\nAirflow environment: venv {timings['venv']:.1f} s, install {timings['install']:.1f} s,"
        f" db migrate {timings['migrate']:.1f} s; dags test {dag_run.seconds:.1f} s"
    )
    [finished] = [line for line in dag_run.output.splitlines() if "DagRun Finished" in line]
    assert "state=success" in finished, finished
    states = dag_run.query("SELECT task_id, map_index, state FROM task_instance")
    assert {state for *_, state in states} == {"success"}, states
    [[models]] = dag_run.query(
        "SELECT value FROM xcom WHERE task_id = 'candidate_names' AND key = 'return_value'"
    )
    per_task = Counter(task_id for task_id, *_ in states)
    assert per_task == {
        "prepare_split": 1,
        "candidate_names": 1,
        "train_candidate": len(json.loads(models)),
        "promote_best": 1,
        "remove_split": 1,
    }


def test_one_xcom_per_task_result(dag_run: DagRun):
    """No implicit multiple_outputs: a dict result is one XCom, not one per key."""
    rows = dag_run.query("SELECT task_id, map_index, key FROM xcom")
    assert {key for *_, key in rows} == {"return_value"}, rows
    per_instance = Counter((task_id, map_index) for task_id, map_index, _ in rows)
    assert set(per_instance.values()) == {1}, per_instance
    assert {task_id for task_id, _ in per_instance} == {
        "prepare_split",
        "candidate_names",
        "train_candidate",
        "promote_best",  # remove_split returns nothing
    }


def test_the_teardown_removes_the_handed_on_files(dag_run: DagRun):
    [[value]] = dag_run.query("SELECT value FROM xcom WHERE task_id = 'prepare_split'")
    folder = Path(json.loads(value))
    handoff = dag_run.project.home / "handoff"
    assert folder.parent == handoff, folder  # in the project, though started elsewhere
    assert not folder.exists()
    assert list(handoff.iterdir()) == []


def test_mlflow_holds_the_airflow_runs_and_the_champion(dag_run: DagRun):
    runs = mlflow_runs_tagged(dag_run.tracking_uri, "orchestrator", "airflow")
    [[models]] = dag_run.query("SELECT value FROM xcom WHERE task_id = 'candidate_names'")
    tags = [{tag["key"]: tag["value"] for tag in run["data"]["tags"]} for run in runs]
    assert sorted(tag["model_type"] for tag in tags) == sorted(json.loads(models))
    champion = champion_version(dag_run.tracking_uri)
    assert champion.status_code == 200, champion.text
    assert champion.json()["model_version"]["run_id"] in {run["info"]["run_id"] for run in runs}
    [[summary]] = dag_run.query("SELECT value FROM xcom WHERE task_id = 'promote_best'")
    assert json.loads(summary).endswith("is the new champion")


def test_task_logs_carry_no_warning_flood(dag_run: DagRun):
    """Importing skops used to log ~1,160 DeprecatedImportWarning lines per task."""
    assert "DeprecatedImportWarning" not in dag_run.output
    ours = [
        line
        for line in dag_run.output.splitlines()
        if "[py.warnings]" in line
        and ("skops" in line or str(dag_run.project.path / "pipelines") in line)
    ]
    assert ours == []


# --- The files, as rendered -------------------------------------------------------------


def test_dag_uses_the_task_sdk_and_imports_the_package_in_tasks(render_project):
    """Parsed every 30 s by Airflow: no package import at module level; Task SDK imports only."""
    project = render_project("airflow-dag", orchestrator="prefect", include_airflow=True)
    source = (project / DAG).read_text()
    tree = ast.parse(source)
    airflow_modules = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module.startswith("airflow")
    }
    assert airflow_modules == {"airflow.sdk"}
    assert not [
        node
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module.startswith(DEFAULT_PACKAGE)
    ]
    assert f'dag_id="{DAG_ID}"' in source
    assert '"*/2 * * * *", timezone="UTC"' in source


@pytest.mark.parametrize(
    ("language", "title", "readme_line"),
    [
        ("en", "# Airflow: an overview", "then `make airflow-test` runs the reference DAG"),
        ("fr", "# Airflow : vue d’ensemble", "puis `make airflow-test` exécute le DAG"),
    ],
    ids=["en", "fr"],
)
def test_overview_in_the_projects_language_beside_the_workshop(
    render_project, language, title, readme_line
):
    project = render_project(f"airflow-{language}", docs_language=language)
    overview = (project / OVERVIEW).read_text()
    assert overview.startswith(title)
    assert "| Airflow 3 | Prefect 3 | Dagster 1.x |" in overview
    assert DAG in overview and "make airflow-env" in overview
    assert (project / DAG).is_file()
    assert not (project / "docs" / "airflow_overview.md").exists()
    readme = (project / "README.md").read_text()
    assert readme_line in readme and f"]({OVERVIEW})" in readme
