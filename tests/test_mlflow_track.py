"""The MLflow track end to end: the notebooks, the registry, serving and batch inference.

One rendered default project gets a real MLflow server (as `make dev --only mlflow`
starts it) on a free port. The three notebooks run with nbclient in a kernel of the
project's environment, the exercises of 01b with their solutions swapped in; the
assertions then read what the server holds. The champion is served with the
project's CLI and called over HTTP, and batch inference writes a predictions file.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import requests

from helpers import (
    DEFAULT_PACKAGE,
    EXPERIMENT,
    DevStack,
    ProjectEnv,
    csv_without_column,
    free_port,
    http_ok,
    listening,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("mlflow")]

RUNNER = Path(__file__).with_name("run_notebooks.py")
NOTEBOOKS = ["01_messy_notebook", "01b_mlflow_transition", "02_mlflow_organized"]
SOLUTIONS = "notebooks/solutions/01b_mlflow_transition_solutions.ipynb"
CHECK_CELLS = ["ex1-check", "ex2-check", "ex3-check"]
DATA_ROWS = 2000  # enough signal for the models, quick to train in every notebook

# What the server holds, read with MlflowClient inside the project's environment, under the
# names the project's own settings give.
SERVER_FACTS = (
    f"from {DEFAULT_PACKAGE}.config import load_settings\n"
    + """
import json, mlflow
from mlflow import MlflowClient
client = MlflowClient()
settings = load_settings()
experiment = client.get_experiment_by_name(settings.experiment_name)
runs = client.search_runs([experiment.experiment_id], max_results=500)
champion = client.get_model_version_by_alias(settings.model_name, "champion")
logged = client.search_logged_models(experiment_ids=[experiment.experiment_id])
signatures = {m.model_id: mlflow.models.get_model_info(f"models:/{m.model_id}").signature
              for m in logged}
print(json.dumps({
    "runs": [{"name": r.info.run_name, "params": r.data.params, "metrics": r.data.metrics,
              "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")}}
             for r in runs],
    "signatures": {i: s.inputs.input_names() if s else None for i, s in signatures.items()},
    "champion": {"version": champion.version, "source": champion.source},
}))
"""
)


def quiet_port() -> int:
    """A free port below the ephemeral range, so no kernel or client socket takes it meanwhile."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


@pytest.fixture(scope="module")
def project(render_project, project_env_for) -> Path:
    project = render_project("mlflow-track", include_solutions=True)  # the teacher's copy
    project_env = project_env_for(project)
    project_env.run(
        [str(project_env.python), "generate_sample_data.py", "--rows", str(DATA_ROWS)], project
    )
    return project


@pytest.fixture(scope="module")
def project_env(project: Path, project_env_for) -> ProjectEnv:
    """The default project's own environment (both orchestrators, the notebooks)."""
    return project_env_for(project)


@pytest.fixture(scope="module")
def tracking_uri(project_env: ProjectEnv, project: Path) -> Iterator[str]:
    port = quiet_port()
    uri = f"http://127.0.0.1:{port}"
    with DevStack(
        project_env, project, only=["mlflow"], MLFLOW_PORT=str(port), MLFLOW_TRACKING_URI=uri
    ):
        yield uri


def create_experiment(tracking_uri: str, name: str) -> None:
    response = requests.post(
        f"{tracking_uri}/api/2.0/mlflow/experiments/create", json={"name": name}, timeout=30
    )
    response.raise_for_status()


def start_runner(
    project_env: ProjectEnv, project: Path, name: str, jobs: list[dict], **env: str
) -> subprocess.Popen:
    spec = project / ".workshop" / f"{name}.jobs.json"
    spec.parent.mkdir(exist_ok=True)
    spec.write_text(json.dumps(jobs))
    return subprocess.Popen(
        [str(project_env.python), str(RUNNER), str(spec)],
        cwd=project,
        env=project_env.environ(project, **env),
        text=True,
        stdout=subprocess.PIPE,
        stderr=(project / ".workshop" / f"{name}.log").open("w"),
    )


def runner_results(process: subprocess.Popen) -> list[dict]:
    stdout, _ = process.communicate(timeout=900)
    assert process.returncode == 0, f"the notebook runner failed:\n{stdout[-3000:]}"
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def wrong_answer_cells(project: Path) -> list[dict]:
    """Exercise 2 answered wrongly (worst first), then its check cell again."""
    solved = nbformat.read(project / SOLUTIONS, as_version=4)
    cells = {cell.id: cell.source for cell in solved.cells}
    wrong = cells["ex2"].replace('"metrics.roc_auc DESC"', '"metrics.roc_auc ASC"')
    assert wrong != cells["ex2"]
    return [
        {"id": "ex2-wrong", "source": wrong},
        {"id": "ex2-check-wrong", "source": cells["ex2-check"]},
    ]


@pytest.fixture(scope="module")
def executed(project_env: ProjectEnv, project: Path, tracking_uri: str) -> dict[str, dict]:
    """Every notebook executed top to bottom, 01b with the solutions filled in.

    Each notebook gets its own kernel, and they run side by side to save time:
    none of their checks depends on another notebook having run first. The
    experiment is created first: two kernels creating it at the same moment hit
    MLflow's race in ``set_experiment``, which leaves the loser's runs in "Default".
    """
    create_experiment(tracking_uri, EXPERIMENT)
    runners = []
    for name in NOTEBOOKS:
        job = {"notebook": f"notebooks/{name}.ipynb", "output": f".workshop/{name}.out.ipynb"}
        if name == "01b_mlflow_transition":
            job.update(solutions=SOLUTIONS, append=wrong_answer_cells(project))
        runners.append(
            start_runner(
                project_env,
                project,
                name,
                [job],
                MLFLOW_TRACKING_URI=tracking_uri,
                SERVING_PORT=str(quiet_port()),
            )
        )
    results = [result for runner in runners for result in runner_results(runner)]
    for result in results:
        print(f"{result['notebook']}: {result['seconds']} s")
    return {Path(result["notebook"]).stem: result for result in results}


@pytest.fixture(scope="module")
def feature_columns(project_env: ProjectEnv, project: Path) -> list[str]:
    """The model's input columns, as the generated package defines them."""
    code = f"import json, {DEFAULT_PACKAGE}.data as d; print(json.dumps(d.FEATURE_COLUMNS))"
    columns = json.loads(project_env.run([str(project_env.python), "-c", code], project).stdout)
    assert "tenure_months" in columns and "churned" not in columns
    return columns


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_server_is_healthy_and_accepts_the_docker_service_name(tracking_uri: str):
    search = f"{tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_ok(f"{tracking_uri}/health")
    assert requests.get(search, headers={"Host": "mlflow:5000"}, timeout=10).status_code == 200
    # The host check is on: an unknown name is refused, so the line above proves something.
    refused = requests.get(search, headers={"Host": "evil.example:5000"}, timeout=10)
    assert refused.status_code == 403


def test_every_notebook_runs_top_to_bottom(executed: dict[str, dict], project: Path):
    assert set(executed) == set(NOTEBOOKS)
    for name, result in executed.items():
        assert result["error"] is None, f"{name} failed:\n{result['error']}"
    transition = executed["01b_mlflow_transition"]["outputs"]
    for cell in CHECK_CELLS:
        assert "✅ Right!" in transition[cell], f"{cell} with the solution: {transition[cell]}"
    served = transition["serve"]
    assert served.count("200 {'predictions': [") == 2, served  # dataframe_split and _records
    for notebook in ("01b", "02"):
        rows = read_csv(project / "data" / f"predictions_{notebook}.csv")
        assert rows and {row["prediction"] for row in rows} <= {"0", "1"}


def test_server_holds_the_runs_models_and_champion(
    executed: dict[str, dict],
    project_env: ProjectEnv,
    project: Path,
    tracking_uri: str,
    feature_columns: list[str],
):
    facts = json.loads(
        project_env.run(
            [str(project_env.python), "-c", SERVER_FACTS], project, MLFLOW_TRACKING_URI=tracking_uri
        ).stdout.splitlines()[-1]
    )
    runs = facts["runs"]
    names = [run["name"] for run in runs]
    for expected in ("first-run", "exercise-1", "random_forest-full", "gradient_boosting"):
        assert expected in names
    organized = {run["name"]: run for run in runs if run["tags"].get("notebook") == "02"}
    assert set(organized) == {"logistic_regression", "random_forest", "gradient_boosting"}
    assert organized["random_forest"]["params"]["max_depth"] == "8"
    for run in organized.values():
        assert set(run["metrics"]) >= {"accuracy", "precision", "recall", "f1", "roc_auc"}
        assert 0.5 < run["metrics"]["roc_auc"] <= 1
    exercise = next(run for run in runs if run["name"] == "exercise-1")
    assert exercise["params"]["max_depth"] == "4" and exercise["tags"]["author"]
    # Six logged models (three from 01b, three from 02), each with the raw columns as signature.
    assert len(facts["signatures"]) == 6
    assert all(columns == feature_columns for columns in facts["signatures"].values())
    champion = facts["champion"]
    assert int(champion["version"]) >= 1
    assert champion["source"].removeprefix("models:/") in facts["signatures"], champion


def test_student_copy_hides_the_answers_and_notebooks_are_stripped(project: Path):
    student = nbformat.read(project / "notebooks/01b_mlflow_transition.ipynb", as_version=4)
    teacher = nbformat.read(project / SOLUTIONS, as_version=4)
    assert [cell.id for cell in student.cells] == [cell.id for cell in teacher.cells]
    exercises = [cell for cell in student.cells if "exercise" in cell.metadata.get("tags", [])]
    assert len(exercises) == 3
    for mine, solved in zip(student.cells, teacher.cells, strict=True):
        if mine in exercises:
            assert "= None  # TODO" in mine.source and "SOLUTION" not in mine.source
            assert "SOLUTION" in solved.source
        elif mine.id != "intro":  # the teacher copy's title says it is solved
            assert mine.source == solved.source, f"cell {mine.id} differs"
    for path in sorted((project / "notebooks").rglob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.nbformat == 4
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


def test_a_wrong_answer_is_called_wrong(executed: dict[str, dict]):
    outputs = executed["01b_mlflow_transition"]["outputs"]
    assert "✅ Right!" in outputs["ex2-check"]
    assert "❌ Not yet" in outputs["ex2-check-wrong"], outputs["ex2-check-wrong"]


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    uri: str


@dataclass
class Served:
    status: int
    body: dict
    log: str
    exit_code: int  # the CLI's, after Ctrl+C
    port_taken_after_exit: bool  # whether anything still listened on the model's port


def cli(
    project_env: ProjectEnv, project: Path, args: list[str], uri: str, log: Path | None = None
) -> subprocess.Popen:
    output = log.open("w") if log else subprocess.PIPE
    return subprocess.Popen(
        [str(project_env.python), "-m", DEFAULT_PACKAGE, *args],
        cwd=project,
        env=project_env.environ(project, MLFLOW_TRACKING_URI=uri),
        stdout=output,
        stderr=output,
        text=True,
        start_new_session=True,
    )


def number_or_text(value: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def call_model_server(
    process: subprocess.Popen, port: int, project: Path, log: Path, features: list[str]
) -> tuple[int, dict]:
    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serve-model exited:\n{log.read_text()[-3000:]}")
        return http_ok(f"http://127.0.0.1:{port}/ping")

    wait_until(ready, 240, "the model server never answered /ping")
    rows = read_csv(project / "data" / "customer_data.csv")[:3]
    # Whole numbers as a client sends them: the server converts them to the signature's floats.
    records = [{name: number_or_text(row[name]) for name in features} for row in rows]
    response = requests.post(
        f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": records}, timeout=60
    )
    return response.status_code, response.json()


def stop_or_explain(server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Wait for the CLI to end after Ctrl+C; if it does not, fail with what it was doing."""
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        processes = subprocess.run(
            ["ps", "-eo", "pid,pgid,stat,wchan:20,etimes,args"], capture_output=True, text=True
        ).stdout
        mine = [line for line in processes.splitlines() if str(server.pid) in line.split()[:2]]
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        raise AssertionError(
            f"serve-model still ran {timeout:.0f} s after Ctrl+C; its processes:\n"
            + "\n".join(mine)
            + f"\nend of its log:\n{log.read_text()[-2000:]}"
        ) from None


@pytest.fixture(scope="module")
def commands(
    executed: dict[str, dict],
    project_env: ProjectEnv,
    project: Path,
    tracking_uri: str,
    feature_columns: list[str],
) -> tuple[dict[str, Outcome], Served]:
    """The CLI as `make serve` and `make predict` run it, good and bad input side by side.

    They run concurrently (each start imports MLflow, slow on a busy machine); the
    model server is called over HTTP, then stopped with Ctrl+C.
    """
    unreachable = f"http://127.0.0.1:{free_port()}"
    data = project / "data" / "customer_data.csv"
    missing = csv_without_column(data, project / "no_tenure.csv", "tenure_months")
    port = quiet_port()
    log = project / ".workshop" / "serve-model.log"
    server = cli(project_env, project, ["serve-model", "--port", str(port)], tracking_uri, log)
    predict = ["predict", "--input", "data/customer_data.csv", "--output", "predictions.csv"]
    runs = {
        "predict": (predict, tracking_uri),
        "missing-column": (
            ["predict", "--input", str(missing), "--output", "out.csv"],
            tracking_uri,
        ),
        "predict-unreachable": (["predict", "--input", "x.csv", "--output", "y.csv"], unreachable),
        "serve-unreachable": (["serve-model"], unreachable),
    }
    one_shots = {name: cli(project_env, project, *run) for name, run in runs.items()}
    try:
        status, body = call_model_server(server, port, project, log, feature_columns)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)  # Ctrl+C
        stop_or_explain(server, log)
    # What the student sees once the CLI has returned: did it stop the uvicorn it started?
    port_taken = listening(port)
    outcomes = {}
    for name, process in one_shots.items():
        stdout, stderr = process.communicate(timeout=600)
        outcomes[name] = Outcome(process.returncode, stdout, stderr, runs[name][1])
    return outcomes, Served(status, body, log.read_text(), server.returncode, port_taken)


def test_serve_model_answers_over_http(commands: tuple[dict[str, Outcome], Served]):
    served = commands[1]
    assert served.status == 200, served.body
    predictions = served.body["predictions"]
    assert len(predictions) == 3 and set(predictions) <= {0, 1}
    assert served.exit_code == 0, served.log  # Ctrl+C is how a student stops it
    assert not served.port_taken_after_exit, "the model server outlived serve-model's Ctrl+C"


def test_batch_predict_writes_a_predictions_file(
    commands: tuple[dict[str, Outcome], Served], project: Path
):
    outcome = commands[0]["predict"]
    assert outcome.returncode == 0, outcome.stderr
    assert f"Wrote {DATA_ROWS} predictions" in outcome.stdout
    rows = read_csv(project / "predictions.csv")
    assert len(rows) == DATA_ROWS and {row["prediction"] for row in rows} == {"0", "1"}
    assert rows[0]["customer_id"] == "C000000"  # the input's columns are kept beside


def test_predict_names_the_missing_column(
    commands: tuple[dict[str, Outcome], Served], project: Path
):
    outcome = commands[0]["missing-column"]
    assert outcome.returncode == 1
    assert "tenure_months" in outcome.stderr and "Traceback" not in outcome.stderr, outcome.stderr
    assert not (project / "out.csv").exists()


@pytest.mark.parametrize("name", ["predict-unreachable", "serve-unreachable"])
def test_unreachable_tracking_server_is_named_once(
    name: str, commands: tuple[dict[str, Outcome], Served]
):
    outcome = commands[0][name]
    assert outcome.returncode == 1
    assert outcome.uri in outcome.stderr and "make dev" in outcome.stderr, outcome.stderr
    # One line, before MLflow's client starts its minutes of logged retries
    # (bench/bench_mlflow.py prints how long the failure takes).
    assert "Traceback" not in outcome.stderr and len(outcome.stderr.strip().splitlines()) == 1
    assert "Retry" not in outcome.stderr
