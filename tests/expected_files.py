"""The exact set of files a project gets for a given set of answers.

Each workshop part owns one group below; a render must contain exactly the
union of the groups its answers select: nothing missing, nothing extra.
"""

from __future__ import annotations

CORE = {
    ".copier-answers.yml",
    ".dockerignore",
    ".env.example",
    ".gitignore",
    ".pre-commit-config.yaml",
    ".python-version",
    "Makefile",
    "README.md",
    "data/.gitkeep",
    "generate_sample_data.py",
    "pyproject.toml",
    "requirements.txt",
    "src/{package}/__init__.py",
    "src/{package}/__main__.py",
    "src/{package}/config.py",
    "src/{package}/data.py",
    "src/{package}/devstack.py",
    "src/{package}/errors.py",
    "src/{package}/evaluation.py",
    "src/{package}/exercises.py",
    "src/{package}/features.py",
    "src/{package}/messages.py",
    "src/{package}/messages.toml",
    "src/{package}/monitoring.py",
    "src/{package}/notifications.py",
    "src/{package}/pipeline.py",
    "src/{package}/processes.py",
    "src/{package}/tracking.py",
    "src/{package}/training.py",
    "tests/conftest.py",
    "tests/test_config.py",
    "tests/test_data.py",
    "tests/test_devstack.py",
    "tests/test_features.py",
    "tests/test_messages.py",
    "tests/test_monitoring.py",
    "tests/test_notifications.py",
    "tests/test_tracking.py",
    "tests/test_training.py",
}

# The MLflow track: rendered always (serving and inference live in the package).
MLFLOW = {
    "docs/mlflow_cheatsheet.md",
    "src/{package}/serving.py",
}

# The orchestrator guide: rendered always, comparing whichever orchestrators the render has.
ORCHESTRATION = {"docs/orchestrators.md"}

# Rendered when include_notebooks is true.
NOTEBOOKS = {
    "notebooks/01_messy_notebook.ipynb",
    "notebooks/01b_mlflow_transition.ipynb",
    "notebooks/02_mlflow_organized.ipynb",
}

# Rendered when include_solutions is true (the teacher's copy): one group per part it solves.
SOLUTIONS = {
    "notebooks": {"notebooks/solutions/01b_mlflow_transition_solutions.ipynb"},
    "prefect": {"pipelines/workshop/prefect/Prefect_Exercises_solution.py"},
    "dagster": {"pipelines/workshop/dagster/Dagster_Exercises_solution.py"},
}

# Rendered when orchestrator is prefect or both.
PREFECT = {
    "docs/prefect.md",
    "pipelines/examples/Prefect_ML_Pipeline.py",
    "pipelines/workshop/prefect/Prefect_Exercises.py",
    "pipelines/workshop/prefect/Prefect_Workshop.py",
    "src/{package}/prefect_exercises.py",
    "src/{package}/prefect_support.py",
    "docs/images/docker-prefect.png",
}

# Rendered when orchestrator is dagster or both.
DAGSTER = {
    "dagster_home/dagster.yaml",
    "dagster_home/workspace.yaml",
    "docs/dagster.md",
    "pipelines/examples/Dagster_ML_Pipeline.py",
    "pipelines/workshop/dagster/Dagster_Exercises.py",
    "pipelines/workshop/dagster/Dagster_Workshop.py",
    "src/{package}/dagster_exercises.py",
    "src/{package}/dagster_support.py",
    "docs/images/docker-dagster.png",
}

# Rendered when include_airflow is true.
AIRFLOW = {
    "pipelines/examples/Airflow_ML_Pipeline.py",
    "pipelines/workshop/airflow/airflow_overview.md",
}

# Docker Compose stack, its one image and the Docker guide: rendered always, with the
# screenshots the guide shows (the Prefect and Dagster ones with their orchestrator).
DOCKER = {
    "docker-compose.yml",
    "Dockerfile",
    "docs/README_DOCKER.md",
    "docs/images/docker-mlflow.png",
}

# The classroom server (docs/classroom.md): rendered always, the class's Prefect workers with
# Prefect, the Dagster pieces with Dagster.
CLASSROOM = {
    "classroom/Dockerfile",
    "classroom/compose.yml",
    "classroom/mlflow_auth.ini",
    "classroom/postgres.sh",
    "classroom/s3.sh",
    "classroom/worker.yml",
    "docs/classroom.md",
    "src/{package}/classroom.py",
    "tests/test_classroom.py",
}
CLASSROOM_PREFECT = {"classroom/worker.sh"}
CLASSROOM_DAGSTER = {
    "classroom/dagster/dagster.yaml",
    "classroom/nginx.conf",
    "classroom/proxy.sh",
}

CI = {"github": {".github/workflows/ci.yml"}, "gitlab": {".gitlab-ci.yml"}, "none": set()}


def expected_files(answers: dict) -> set[str]:
    orchestrator = answers["orchestrator"]
    files = CORE | MLFLOW | ORCHESTRATION | DOCKER | CLASSROOM | CI[answers["ci"]]
    solutions = answers.get("include_solutions", False)
    if answers["include_notebooks"]:
        files |= NOTEBOOKS | (SOLUTIONS["notebooks"] if solutions else set())
    if orchestrator in ("prefect", "both"):
        files |= PREFECT | CLASSROOM_PREFECT | (SOLUTIONS["prefect"] if solutions else set())
    if orchestrator in ("dagster", "both"):
        files |= DAGSTER | CLASSROOM_DAGSTER | (SOLUTIONS["dagster"] if solutions else set())
    if answers["include_airflow"]:
        files |= AIRFLOW
    return {path.format(package=answers["package_name"]) for path in files}
