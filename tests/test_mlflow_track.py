"""The MLflow track end to end: the notebooks, the registry, serving and batch inference.

One rendered default project gets a real MLflow server (as `make dev --only mlflow`
starts it) on a free port. The three notebooks run with nbclient in a kernel of the
project's environment, the exercises of 01b with their solutions swapped in; the
assertions then read what the server holds. The French render's notebooks run beside
them, against the same server, in experiments and a registered model of their own. The
champion is served with the project's CLI and called over HTTP, and batch inference
writes a predictions file.

Every notebook exists once per class language, with the same cells: the render-only
tests below compare the languages' notebooks and read their words.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import requests

from helpers import (
    DEFAULT_PACKAGE,
    EXPERIMENT,
    MODEL_NAME,
    DevStack,
    ProjectEnv,
    copier_choices,
    copier_default,
    csv_without_column,
    environment_key,
    foreign_sentences,
    free_port,
    http_ok,
    listening,
    project_lines,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("mlflow")]

RUNNER = Path(__file__).with_name("run_notebooks.py")
NOTEBOOKS = ["01_messy_notebook", "01b_mlflow_transition", "02_mlflow_organized"]
SOLUTIONS = "notebooks/solutions/01b_mlflow_transition_solutions.ipynb"
CHECK_CELLS = ["ex1-check", "ex2-check", "ex3-check"]
DATA_ROWS = 2000  # enough signal for the models, quick to train in every notebook
LANGUAGES = copier_choices("docs_language")
DEFAULT_LANGUAGE = copier_default("docs_language")  # the language of the `project` fixture
# What 01b's checks print, by class language.
RIGHT = {"en": "✅ Right!", "fr": "✅ C’est juste !"}
NOT_YET = {"en": "❌ Not yet", "fr": "❌ Pas encore"}
# The grid of 02's tuned search: one child run per set of parameters.
SEARCH_TRIALS = 4

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
aliases = {alias: client.get_model_version_by_alias(settings.model_name, alias)
           for alias in ("champion", "challenger")}
logged = client.search_logged_models(experiment_ids=[experiment.experiment_id])
signatures = {m.model_id: mlflow.models.get_model_info(f"models:/{m.model_id}").signature
              for m in logged}
print(json.dumps({
    "runs": [{"id": r.info.run_id, "name": r.info.run_name,
              "parent": r.data.tags.get("mlflow.parentRunId"),
              "params": r.data.params, "metrics": r.data.metrics,
              "tags": {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")}}
             for r in runs],
    "models": {m.model_id: {"run": m.source_run_id,
                            "inputs": signatures[m.model_id].inputs.input_names()
                            if signatures[m.model_id] else None}
               for m in logged},
    "aliases": {alias: {"version": v.version, "source": v.source} for alias, v in aliases.items()},
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
def projects(project: Path, render_project) -> dict[str, Path]:
    """The teacher's copy in every class language, by language.

    The other languages' copies have the default project name, so the same package, and
    run in the default project's environment: the environment does not hold the package
    (``PYTHONPATH`` names each copy's ``src``), and the language changes no dependency.
    They get the default project's data file, the same 2000 customers.
    """
    copies = {DEFAULT_LANGUAGE: project}
    for language in LANGUAGES:
        if language != DEFAULT_LANGUAGE:
            copy = render_project(
                f"mlflow-track-{language}", include_solutions=True, docs_language=language
            )
            assert environment_key(copy) == environment_key(project), language
            shutil.copy(project / "data" / "customer_data.csv", copy / "data" / "customer_data.csv")
            copies[language] = copy
    return copies


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


def class_names(language: str) -> dict[str, str]:
    """The experiment and registered model of a class on the shared server (.env's names).

    The default language keeps the project's defaults, which the CLI tests below serve;
    each other class gets its own, so that its runs, models and aliases are its own.
    """
    suffix = "" if language == DEFAULT_LANGUAGE else f"-{language}"
    return {
        "MLFLOW_EXPERIMENT_NAME": f"{EXPERIMENT}{suffix}",
        "MLFLOW_MODEL_NAME": f"{MODEL_NAME}{suffix}",
    }


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


def notebook_job(project: Path, name: str) -> dict:
    job = {"notebook": f"notebooks/{name}.ipynb", "output": f".workshop/{name}.out.ipynb"}
    if name == "01b_mlflow_transition":
        job.update(solutions=SOLUTIONS, append=wrong_answer_cells(project))
    return job


@pytest.fixture(scope="module")
def executed(
    project_env: ProjectEnv, projects: dict[str, Path], tracking_uri: str
) -> dict[str, dict[str, dict]]:
    """Every notebook of every class language executed top to bottom, 01b with the solutions
    filled in: by language, then by notebook.

    Each notebook gets its own kernel. Two runners per language run side by side to save
    time, 01b (the longest) in one, 01 then 02 in the other: none of their checks depends
    on another notebook having run first. The experiments are created first: two kernels
    creating one at the same moment hit MLflow's race in ``set_experiment``, which leaves
    the loser's runs in "Default".
    """
    for language in projects:
        create_experiment(tracking_uri, class_names(language)["MLFLOW_EXPERIMENT_NAME"])
    runners = {}
    for language, folder in projects.items():
        for group in (["01b_mlflow_transition"], ["01_messy_notebook", "02_mlflow_organized"]):
            runners[language, group[0]] = start_runner(
                project_env,
                folder,
                group[0],
                [notebook_job(folder, name) for name in group],
                MLFLOW_TRACKING_URI=tracking_uri,
                SERVING_PORT=str(quiet_port()),
                **class_names(language),
            )
    results: dict[str, dict[str, dict]] = {language: {} for language in projects}
    for (language, _), runner in runners.items():
        for result in runner_results(runner):
            print(f"{language} {result['notebook']}: {result['seconds']} s")
            results[language][Path(result["notebook"]).stem] = result
    return results


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


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_notebook_runs_top_to_bottom(
    executed: dict[str, dict[str, dict]], projects: dict[str, Path], language: str
):
    ran, folder = executed[language], projects[language]
    assert set(ran) == set(NOTEBOOKS)
    for name, result in ran.items():
        assert result["error"] is None, f"{name} ({language}) failed:\n{result['error']}"
    transition = ran["01b_mlflow_transition"]["outputs"]
    for cell in CHECK_CELLS:
        assert RIGHT[language] in transition[cell], f"{cell} with the solution: {transition[cell]}"
    served = transition["serve"]
    assert served.count("200 {'predictions': [") == 2, served  # dataframe_split and _records
    for notebook in ("01b", "02"):
        rows = read_csv(folder / "data" / f"predictions_{notebook}.csv")
        assert rows and {row["prediction"] for row in rows} <= {"0", "1"}
    # The messy notebook pickles its models where git ignores them.
    pickles = sorted(path.name for path in (folder / "models").iterdir())
    assert "model_final_v2.pkl" in pickles, pickles
    assert "models/\n" in (folder / ".gitignore").read_text()
    # No model server runs during the test: 02's optional call says how to start one.
    assert "make serve" in ran["02_mlflow_organized"]["printed"]["serve-call"]


def server_facts(project_env: ProjectEnv, folder: Path, tracking_uri: str, language: str) -> dict:
    """What the server holds for a class, read with MlflowClient under its own names."""
    result = project_env.run(
        [str(project_env.python), "-c", SERVER_FACTS],
        folder,
        MLFLOW_TRACKING_URI=tracking_uri,
        **class_names(language),
    )
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("language", LANGUAGES)
def test_server_holds_the_runs_models_and_champion(
    executed: dict[str, dict[str, dict]],
    project_env: ProjectEnv,
    projects: dict[str, Path],
    tracking_uri: str,
    feature_columns: list[str],
    language: str,
):
    facts = server_facts(project_env, projects[language], tracking_uri, language)
    runs = facts["runs"]
    names = [run["name"] for run in runs]
    for expected in ("first-run", "exercise-1", "random_forest-full", "gradient_boosting"):
        assert expected in names
    exercise = next(run for run in runs if run["name"] == "exercise-1")
    assert exercise["params"]["max_depth"] == "4" and exercise["tags"]["author"]

    organized = [run for run in runs if run["tags"].get("notebook") == "02"]
    candidates = {run["name"]: run for run in organized if run["tags"].get("step") == "candidates"}
    assert set(candidates) == {"logistic_regression", "random_forest", "gradient_boosting"}
    assert candidates["random_forest"]["params"]["max_depth"] == "8"
    for run in candidates.values():
        assert set(run["metrics"]) >= {"accuracy", "precision", "recall", "f1", "roc_auc"}
        assert 0.5 < run["metrics"]["roc_auc"] <= 1
    # Autologging: the whole pipeline's parameters and training-set metrics, unasked.
    [autolog] = [run for run in organized if run["name"] == "autolog-logistic_regression"]
    assert "classifier__C" in autolog["params"] and len(autolog["params"]) > 20, autolog
    assert any(name.startswith("training_") for name in autolog["metrics"]), autolog
    # The tuned search: a parent run, its trials as child runs, the winner's test metrics.
    [search] = [run for run in organized if run["tags"].get("step") == "search"]
    trials = [run for run in runs if run["parent"] == search["id"]]
    assert len(trials) == SEARCH_TRIALS, [run["name"] for run in trials]
    for trial in trials:
        assert trial["tags"]["step"] == "trial" and "cv_f1" in trial["metrics"], trial
        assert {"max_depth", "min_samples_leaf"} <= set(trial["params"]), trial
    assert {"best_max_depth", "best_min_samples_leaf"} <= set(search["params"]), search
    assert 0.5 < search["metrics"]["roc_auc"] <= 1, search

    # Seven logged models (three from 01b, three candidates and the tuned forest from 02),
    # each with the raw columns as signature; the tuned one belongs to the search's run.
    models = facts["models"]
    assert len(models) == 7, models
    assert all(model["inputs"] == feature_columns for model in models.values()), models
    [tuned] = [model_id for model_id, model in models.items() if model["run"] == search["id"]]
    champion, challenger = facts["aliases"]["champion"], facts["aliases"]["challenger"]
    assert int(champion["version"]) >= 1
    assert champion["source"].removeprefix("models:/") in models, champion
    assert challenger["source"] == f"models:/{tuned}", challenger


def notebook_copies(project: Path) -> list[Path]:
    return sorted((project / "notebooks").rglob("*.ipynb"))


@pytest.mark.parametrize("language", LANGUAGES)
def test_student_copy_hides_the_answers_and_notebooks_are_stripped(
    projects: dict[str, Path], language: str
):
    project = projects[language]
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
    for path in notebook_copies(project):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        assert notebook.nbformat == 4
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_wrong_answer_is_called_wrong(executed: dict[str, dict[str, dict]], language: str):
    outputs = executed[language]["01b_mlflow_transition"]["outputs"]
    assert RIGHT[language] in outputs["ex2-check"]
    assert NOT_YET[language] in outputs["ex2-check-wrong"], outputs["ex2-check-wrong"]


@pytest.mark.parametrize("language", LANGUAGES)
def test_notebooks_print_in_the_class_language(executed: dict[str, dict[str, dict]], language: str):
    """What the executed notebooks print themselves (their ``print`` calls, the package's
    sentences they print) is in the class's language. The lines MLflow and the model server
    print on the same stdout (LIBRARY_LINES) are theirs, in English whatever the class, and
    left out; so are the values a cell shows (tables, arrays), which are data."""
    others = [other for other in LANGUAGES if other != language]
    for name, result in executed[language].items():
        text = "\n".join(project_lines(printed) for printed in result["printed"].values())
        assert not foreign_sentences(text, language), f"{name} ({language}) prints: {text}"
        if name != "01_messy_notebook":  # 01 prints scores and shapes, hardly a sentence
            assert all(foreign_sentences(text, other) for other in others), f"{name}: {text}"


# --- The notebooks in every class language (render only) ------------------------------------


@pytest.fixture(scope="module")
def notebooks_by_language(render_project) -> dict[str, dict[str, nbformat.NotebookNode]]:
    """Every notebook of the teacher's copy (the solutions too), by language then path."""
    rendered = {}
    for language in LANGUAGES:
        folder = render_project(
            f"notebooks-{language}", include_solutions=True, docs_language=language
        )
        rendered[language] = {
            str(path.relative_to(folder)): nbformat.read(path, as_version=4)
            for path in notebook_copies(folder)
        }
    return rendered


class Wordless(ast.NodeTransformer):
    """A cell's code with its words taken out: every string empty, every f-string reduced
    to its placeholders. What is left is what the code does."""

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        return ast.Constant("") if isinstance(node.value, str) else node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        self.generic_visit(node)
        node.values = [value for value in node.values if isinstance(value, ast.FormattedValue)]
        return node


def code_shape(source: str) -> str:
    return ast.dump(Wordless().visit(ast.parse(source)))


def test_notebooks_have_the_same_cells_in_every_language(
    notebooks_by_language: dict[str, dict[str, nbformat.NotebookNode]],
):
    """Each notebook is one file per language (chosen by file name, rendered under the same
    name), with the same cells: same ids (the solutions and the tests find cells by id),
    kinds and tags, and the same code once its comments and strings are taken out."""
    reference = notebooks_by_language[DEFAULT_LANGUAGE]
    assert sorted(reference) == [
        "notebooks/01_messy_notebook.ipynb",
        "notebooks/01b_mlflow_transition.ipynb",
        "notebooks/02_mlflow_organized.ipynb",
        SOLUTIONS,
    ]
    for language, notebooks in notebooks_by_language.items():
        assert set(notebooks) == set(reference), language
        for path, notebook in notebooks.items():
            expected = reference[path].cells
            assert [(c.id, c.cell_type, c.metadata.get("tags")) for c in notebook.cells] == [
                (c.id, c.cell_type, c.metadata.get("tags")) for c in expected
            ], f"{path} ({language})"
            for mine, theirs in zip(notebook.cells, expected, strict=True):
                if mine.cell_type == "code":
                    assert code_shape(mine.source) == code_shape(theirs.source), (
                        f"{path} ({language}), cell {mine.id}: the code differs, not only words"
                    )


def reader_text(notebook: nbformat.NotebookNode) -> str:
    """What a student reads in a notebook: its markdown, and in its code the comments and
    every string (printed sentences, hints, plot titles and labels, docstrings); an f-string's
    placeholders become ``{}``, which ``foreign_sentences`` leaves out."""
    lines = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            lines += cell.source.splitlines()
            continue
        tokens = tokenize.generate_tokens(io.StringIO(cell.source).readline)
        lines += [token.string.lstrip("# ") for token in tokens if token.type == tokenize.COMMENT]
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.JoinedStr):
                parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
                lines += "".join(parts).splitlines()
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                lines += node.value.splitlines()
    return "\n".join(lines)


def test_notebooks_read_in_the_class_language(
    notebooks_by_language: dict[str, dict[str, nbformat.NotebookNode]],
):
    """No line a student reads in a French notebook is English, nor the reverse; each
    notebook read as another language is foreign, so the check reads what it means to."""
    for language, notebooks in notebooks_by_language.items():
        others = [other for other in LANGUAGES if other != language]
        for path, notebook in notebooks.items():
            text = reader_text(notebook)
            foreign = foreign_sentences(text, language)
            assert not foreign, f"{path} ({language}) has lines in another language: {foreign}"
            for other in others:
                assert len(foreign_sentences(text, other)) > 10, f"{path} ({language}): unread"


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
