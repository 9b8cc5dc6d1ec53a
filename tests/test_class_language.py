"""A class in its own language: what the project's programs print, run for real.

A French class renders the project in French; an English class in English. Each class
runs the commands a session goes through (data, `make dev` for MLflow, training, a
drifted batch, monitoring, batch inference, the Dagster workshop in process) and the
mistakes a class makes (no server, no input file), then the test reads everything those
programs printed: every line the project wrote must be in the class's language, and each
command must have printed its own sentence of the render's catalog.

What the libraries print themselves (MLflow's "View run" links, Dagster's and Prefect's
log lines, Python's warnings) is theirs, in English whatever the class: it is left out,
by ``helpers.LIBRARY_LINES``, before the reading.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from helpers import (
    DEFAULT_PACKAGE,
    EXPERIMENT,
    DevStack,
    Facts,
    copier_choices,
    foreign_sentences,
    free_port,
    messages,
    mlflow_search_runs,
    project_lines,
    sentence_pattern,
    stack_env,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("class-language")]

LANGUAGES = copier_choices("docs_language")
CLOSED = f"http://127.0.0.1:{free_port()}"  # a server nobody runs


@pytest.fixture(scope="module", params=LANGUAGES)
def session(request, render_project, project_env_for) -> Facts:
    """One class's session: every command run once, its output kept for the tests."""
    language = request.param
    project = render_project(f"class-{language}", orchestrator="both", docs_language=language)
    env = project_env_for(project)
    servers = stack_env()
    facts = Facts(language=language, project=project, outputs={})

    def run(name: str, *args: str, **extra_env: str) -> None:
        result = env.run([str(env.python), *args], project, check=False, **(servers | extra_env))
        facts["outputs"][name] = result

    run("data", "generate_sample_data.py", "--rows", "1000")
    run("batch", "generate_sample_data.py", "--batch")
    run("drifted batch", "generate_sample_data.py", "--drift")
    run("no server", "-m", DEFAULT_PACKAGE, "train", MLFLOW_TRACKING_URI=CLOSED)
    run(
        "no prefect",
        "pipelines/workshop/prefect/Prefect_Workshop.py",
        "part1",
        PREFECT_API_URL=f"{CLOSED}/api",
    )
    run("prefect usage", "pipelines/workshop/prefect/Prefect_Workshop.py")
    run(
        "dagster check, no webserver",
        "pipelines/workshop/dagster/Dagster_Exercises.py",
        "check",
        DAGSTER_UI_URL=CLOSED,
    )
    # `make mlflow` on the classroom server: the class's MLflow serves, nothing starts here.
    run(
        "dev, on the classroom server",
        "-m",
        DEFAULT_PACKAGE,
        "dev",
        "--only",
        "mlflow",
        CLASSROOM_LOGIN="alice",
    )
    with DevStack(env, project, only=["mlflow"], **servers) as stack:
        run("train", "-m", DEFAULT_PACKAGE, "train", "--models", "logistic_regression")
        run("monitor", "-m", DEFAULT_PACKAGE, "monitor", "--no-retrain")
        run(
            "predict",
            "-m",
            DEFAULT_PACKAGE,
            "predict",
            "--input",
            "data/batches/batch_001.csv",
            "--output",
            ".workshop/predictions.csv",
        )
        run(
            "no input",
            "-m",
            DEFAULT_PACKAGE,
            "predict",
            "--input",
            "absent.csv",
            "--output",
            "x.csv",
        )
        run("dagster part 1", "pipelines/workshop/dagster/Dagster_Workshop.py")
        facts["drift report"] = drift_report_page(servers["MLFLOW_TRACKING_URI"])
    facts["dev"] = stack.output()
    return facts


def drift_report_page(tracking_uri: str) -> str:
    """The drift report of the last monitoring run, through MLflow's artifact proxy."""
    [run] = mlflow_search_runs(tracking_uri, f"{EXPERIMENT}-monitoring")
    response = requests.get(
        f"{tracking_uri}/get-artifact",
        params={"path": "drift_report.html", "run_uuid": run["info"]["run_id"]},
        timeout=30,
    )
    response.raise_for_status()
    return response.content.decode("utf-8")  # as the page's <meta charset> tells a browser


def catalog_sentence(project: Path, key: str) -> str:
    sentence = messages(project)
    for part in key.split("."):
        sentence = sentence[part]
    return sentence


def catalog_says(session: Facts, command: str, *keys: str) -> None:
    """``command`` printed each sentence at ``keys`` (dotted; ``a|b``: one of them) of the
    render's catalog."""
    result = session["outputs"][command]
    printed = result.stdout + result.stderr
    for key in keys:
        sentences = [catalog_sentence(session["project"], one) for one in key.split("|")]
        found = any(sentence_pattern(sentence).search(printed) for sentence in sentences)
        assert found, f"{command}: no {key}\n{printed}"


def test_each_command_printed_its_sentence_of_the_catalog(session: Facts):
    catalog_says(session, "data", "cli.wrote_customers")
    catalog_says(session, "batch", "cli.wrote_batch")
    catalog_says(session, "drifted batch", "cli.wrote_drifted_batch")
    catalog_says(session, "no server", "errors.line", "tracking.unreachable")
    catalog_says(session, "no prefect", "prefect.server_unreachable")
    catalog_says(session, "prefect usage", "workshop.prefect.usage")
    catalog_says(session, "dagster check, no webserver", "exercises.dagster.unreachable")
    catalog_says(session, "dev, on the classroom server", "devstack.classroom")
    catalog_says(session, "no input", "errors.line", "serving.input_not_found")
    catalog_says(session, "train", "tracking.new_champion")
    catalog_says(session, "monitor", "monitoring.summary", "cli.report")
    catalog_says(session, "predict", "cli.wrote_predictions")
    catalog_says(session, "dagster part 1", "tracking.new_champion|tracking.not_champion")
    devstack = messages(session["project"])["devstack"]
    assert devstack["starting"].format(service="mlflow") in session["dev"], session["dev"]
    assert devstack["all_up"] in session["dev"], session["dev"]


def test_every_line_the_project_printed_is_in_the_class_language(session: Facts):
    outputs = {
        name: project_lines(result.stdout + result.stderr)
        for name, result in session["outputs"].items()
    }
    outputs["make dev"] = project_lines(session["dev"])
    foreign = {
        name: lines
        for name, output in outputs.items()
        if (lines := foreign_sentences(output, session["language"]))
    }
    assert not foreign, f"{session['language']} class, lines in another language: {foreign}"


def test_the_drift_report_page_is_in_the_class_language(session: Facts):
    """The HTML report the monitoring run logged, as the MLflow UI shows it."""
    page = session["drift report"]
    title = catalog_sentence(session["project"], "monitoring.report.title")
    assert sentence_pattern(title).search(page), page
    words = re.sub(r"<[^>]+>", "\n", page)  # the page's text, one piece per element
    assert not foreign_sentences(words, session["language"]), page
