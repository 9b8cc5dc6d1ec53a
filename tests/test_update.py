"""`copier update` brings a template fix into a project and keeps the student's edits.

The stories: a one-line fix between two tags; the update from the previous real
release of this template, across moved and new files; the Airflow files that release
2.0.0 moved, which copier.yml's migration follows with the student's edits. And under
stress: files the student deleted, a student who edited the very line the template fixed,
and `copier recopy` over a file the student broke.
"""

from __future__ import annotations

import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from copier import run_copy, run_update

from helpers import DEFAULT_PACKAGE, TEMPLATE_ROOT

PACKAGE = f"src/{DEFAULT_PACKAGE}"
FIXED_LINE = 'PRIMARY_METRIC = "f1"'
OLD_LINE = 'PRIMARY_METRIC = "accuracy"'
STUDENT_LINE = 'PRIMARY_METRIC = "roc_auc"'
EVALUATION = "template/src/{{package_name}}/evaluation.py"
# The last release before the orchestrators' shared glue moved into the package
# (prefect_support, dagster_support, processes) and the README split per language.
PREVIOUS_RELEASE = "b9dc776"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.org", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def make_template_repo(template_dir: Path, repo: Path) -> Path:
    """Release 1.0.0 lacks a fix that the working tree (released as 1.1.0) has."""
    shutil.copytree(template_dir, repo)
    fixed = (repo / EVALUATION).read_text()
    assert FIXED_LINE in fixed
    git(repo, "init", "-q", "-b", "main")
    (repo / EVALUATION).write_text(fixed.replace(FIXED_LINE, OLD_LINE))
    commit_all(repo, "Release 1.0.0")
    git(repo, "tag", "1.0.0")
    (repo / EVALUATION).write_text(fixed)
    commit_all(repo, "Pick models on F1: churn classes are imbalanced")
    git(repo, "tag", "1.1.0")
    return repo


def render_at(template: Path, destination: Path, answers: dict, release: str) -> Path:
    run_copy(
        str(template),
        destination,
        data=answers,
        vcs_ref=release,
        defaults=True,
        unsafe=True,
        quiet=True,
    )
    return destination


def student_project(template: Path, answers: dict, release: str) -> Path:
    """A project rendered at ``release`` beside the template, committed, then edited by its
    student: a model's hyper-parameter changed and notes added."""
    project = render_at(template, template.parent / "project", answers, release)
    git(project, "init", "-q", "-b", "main")
    commit_all(project, "Start from the template")
    training = project / PACKAGE / "training.py"
    training.write_text(training.read_text().replace("n_estimators=100", "n_estimators=300"))
    (project / "notes").mkdir()
    (project / "notes" / "experiments.md").write_text("# What I tried\n")
    commit_all(project, "My experiments")
    return project


def update_keeps_the_edits(template: Path, project: Path, answers: dict, release: str) -> None:
    """``copier update`` to ``release``: no conflict, the answers and the student's edits kept,
    and nothing else differs from a fresh render of that release."""
    run_update(project, defaults=True, overwrite=True, unsafe=True, quiet=True)
    assert not list(project.rglob("*.rej")), "the update left conflicts"
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert recorded["_commit"] == release
    assert {key: recorded[key] for key in answers} == answers
    assert "n_estimators=300" in (project / PACKAGE / "training.py").read_text()
    assert (project / "notes" / "experiments.md").read_text() == "# What I tried\n"
    fresh = render_at(template, project.parent / "fresh", answers, release)
    assert differences(project, fresh) == {f"{PACKAGE}/training.py", "notes/experiments.md"}


def test_update_keeps_hand_edits_and_brings_the_fix(template_dir: Path, tmp_path: Path):
    template = make_template_repo(template_dir, tmp_path / "template")
    answers = {"orchestrator": "prefect", "notifications": "slack", "docs_language": "fr"}
    project = student_project(template, answers, "1.0.0")
    assert OLD_LINE in (project / PACKAGE / "evaluation.py").read_text()

    update_keeps_the_edits(template, project, answers, "1.1.0")

    assert FIXED_LINE in (project / PACKAGE / "evaluation.py").read_text()


def differences(left: Path, right: Path) -> set[str]:
    """Relative paths present in only one tree or different in content (.git ignored)."""

    def files(root: Path) -> set[str]:
        return {
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(root).parts
        }

    left_files, right_files = files(left), files(right)
    changed = {
        name
        for name in left_files & right_files
        if not filecmp.cmp(left / name, right / name, shallow=False)
    }
    return changed | (left_files ^ right_files)


def copier_cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``copier`` command a student types in the project, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "copier", *args], cwd=project, capture_output=True, text=True
    )


def succeeded(run: subprocess.CompletedProcess[str]) -> bool:
    return run.returncode == 0 and "Traceback" not in run.stderr


def recorded_answers(project: Path) -> dict:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())


# A page the 1.1.0 fix does not touch.
CHEATSHEET = "docs/mlflow_cheatsheet.md"


def test_update_leaves_the_files_a_student_deleted_deleted(template_dir: Path, tmp_path: Path):
    """A rendered file the student deleted and committed stays deleted: the cheat sheet, which
    the fix does not touch, and evaluation.py too, which it does. Copier (9.19) does not bring
    back a file the student chose to remove, and drops the fix with it without a word; the
    update succeeds, records the new release and keeps everything else."""
    template = make_template_repo(template_dir, tmp_path / "template")
    answers = {"orchestrator": "prefect", "docs_language": "en"}
    project = student_project(template, answers, "1.0.0")
    (project / CHEATSHEET).unlink()
    (project / PACKAGE / "evaluation.py").unlink()
    commit_all(project, "Remove what I don't use")

    update = copier_cli(project, "update", "--defaults", "--trust")

    assert succeeded(update), update.stderr
    assert not (project / CHEATSHEET).exists()
    assert not (project / PACKAGE / "evaluation.py").exists()
    recorded = recorded_answers(project)
    assert recorded["_commit"] == "1.1.0"
    assert {key: recorded[key] for key in answers} == answers
    assert git(project, "status", "--porcelain", "--untracked-files=all") == (
        "M .copier-answers.yml"
    )
    assert "n_estimators=300" in (project / PACKAGE / "training.py").read_text()
    fresh = render_at(template, project.parent / "fresh", answers, "1.1.0")
    assert differences(project, fresh) == {
        f"{PACKAGE}/training.py",
        "notes/experiments.md",
        CHEATSHEET,
        f"{PACKAGE}/evaluation.py",
    }


def test_update_marks_the_conflict_where_the_student_edited_the_fixed_line(
    template_dir: Path, tmp_path: Path
):
    """The student picked models on ROC AUC, on the very line the fix changes. The update
    writes both lines between git's conflict markers and marks the file unmerged in git's
    index, so `git status` lists it as "both modified" under "Unmerged paths"; copier names no
    file, but copier.yml's message after an update says where to look and what to do. Outside
    the markers the file is the new release's, and nothing else in the project is lost."""
    template = make_template_repo(template_dir, tmp_path / "template")
    answers = {"orchestrator": "dagster", "docs_language": "fr"}
    project = student_project(template, answers, "1.0.0")
    evaluation = project / PACKAGE / "evaluation.py"
    evaluation.write_text(evaluation.read_text().replace(OLD_LINE, STUDENT_LINE))
    commit_all(project, "Pick models on ROC AUC")

    update = copier_cli(project, "update", "--defaults", "--trust", "--conflict", "inline")

    assert succeeded(update), update.stderr
    assert "Updating to template version 1.1.0" in update.stderr
    assert '`git status` lists it under "Unmerged paths"' in update.stderr, "copier.yml says so"
    conflict = (
        f"<<<<<<< before updating\n{STUDENT_LINE}\n=======\n{FIXED_LINE}\n>>>>>>> after updating\n"
    )
    merged = evaluation.read_text()
    assert merged.count(conflict) == 1
    assert git(project, "diff", "--name-only", "--diff-filter=U") == f"{PACKAGE}/evaluation.py"
    assert f"UU {PACKAGE}/evaluation.py" in git(project, "status", "--porcelain").splitlines()
    assert not list(project.rglob("*.rej"))
    fresh = render_at(template, project.parent / "fresh", answers, "1.1.0")
    template_side = merged.replace(conflict, FIXED_LINE + "\n")
    assert template_side == (fresh / PACKAGE / "evaluation.py").read_text()
    assert recorded_answers(project)["_commit"] == "1.1.0"
    assert "n_estimators=300" in (project / PACKAGE / "training.py").read_text()
    assert (project / "notes" / "experiments.md").read_text() == "# What I tried\n"
    assert differences(project, fresh) == {
        f"{PACKAGE}/training.py",
        "notes/experiments.md",
        f"{PACKAGE}/evaluation.py",
    }


def test_recopy_restores_a_broken_file_at_the_projects_release(template_dir: Path, tmp_path: Path):
    """A half-saved evaluation.py got committed. `copier recopy --vcs-ref=:current:` renders
    the release and the answers recorded in .copier-answers.yml again (without the flag it
    would render the newest tag): the broken file comes back as that release renders it, files
    the template does not render stay. Recopy overwrites every rendered file, the student's
    edits too; they are in git, and `git restore` brings back the ones to keep."""
    template = make_template_repo(template_dir, tmp_path / "template")
    answers = {"orchestrator": "dagster", "notifications": "slack", "docs_language": "fr"}
    project = student_project(template, answers, "1.0.0")
    evaluation = project / PACKAGE / "evaluation.py"
    rendered = evaluation.read_text()
    evaluation.write_text(rendered[: len(rendered) // 2])
    commit_all(project, "Work in progress")
    (project / "notes" / "todo.md").write_text("- try class weights\n")

    recopy = copier_cli(
        project, "recopy", "--trust", "--defaults", "--overwrite", "--vcs-ref=:current:"
    )

    assert succeeded(recopy), recopy.stderr
    assert evaluation.read_text() == rendered
    recorded = recorded_answers(project)
    assert recorded["_commit"] == "1.0.0"
    assert {key: recorded[key] for key in answers} == answers
    assert (project / "notes" / "experiments.md").read_text() == "# What I tried\n"
    assert (project / "notes" / "todo.md").read_text() == "- try class weights\n"
    overwritten = {f"{PACKAGE}/evaluation.py", f"{PACKAGE}/training.py"}
    assert set(git(project, "diff", "--name-only").splitlines()) == overwritten
    git(project, "restore", f"{PACKAGE}/training.py")
    assert "n_estimators=300" in (project / PACKAGE / "training.py").read_text()
    fresh = render_at(template, project.parent / "fresh", answers, "1.0.0")
    assert differences(project, fresh) == {
        f"{PACKAGE}/training.py",
        "notes/experiments.md",
        "notes/todo.md",
    }


def make_release_repo(template_dir: Path, repo: Path) -> Path:
    """Release 1.0.0 is PREVIOUS_RELEASE from this repository's history; 2.0.0 the working tree."""
    repo.mkdir()
    archive = subprocess.run(
        ["git", "archive", PREVIOUS_RELEASE], cwd=TEMPLATE_ROOT, check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(repo)], input=archive.stdout, check=True)
    git(repo, "init", "-q", "-b", "main")
    commit_all(repo, "Release 1.0.0")
    git(repo, "tag", "1.0.0")
    shutil.rmtree(repo / "template")
    shutil.copytree(template_dir, repo, dirs_exist_ok=True)
    commit_all(repo, "Glue in the package, one README per language")
    git(repo, "tag", "2.0.0")
    return repo


def test_update_from_the_previous_release_moves_the_glue(template_dir: Path, tmp_path: Path):
    template = make_release_repo(template_dir, tmp_path / "template")
    answers = {"orchestrator": "both", "notifications": "discord", "docs_language": "fr"}
    project = student_project(template, answers, "1.0.0")
    assert not (project / PACKAGE / "prefect_support.py").exists()

    update_keeps_the_edits(template, project, answers, "2.0.0")

    for module in ("prefect_support.py", "dagster_support.py", "processes.py"):
        assert (project / PACKAGE / module).is_file(), module
    workshop = (project / "pipelines/workshop/prefect/Prefect_Workshop.py").read_text()
    assert "sys.path" not in workshop
    assert (project / "README.md").read_text().startswith("# Churn MLOps Workshop")


# Where the previous release rendered the Airflow files, and where they are now.
OLD_DAG, NEW_DAG = (
    "pipelines/airflow/churn_training_dag.py",
    "pipelines/examples/Airflow_ML_Pipeline.py",
)
OLD_OVERVIEW, NEW_OVERVIEW = (
    "docs/airflow_overview.md",
    "pipelines/workshop/airflow/airflow_overview.md",
)
AIRFLOW_MOVES = {OLD_DAG: NEW_DAG, OLD_OVERVIEW: NEW_OVERVIEW}
DAG_TAGS = 'tags=["churn", "mlflow", "workshop"]'
STUDENT_TAGS = 'tags=["churn", "mlflow", "workshop", "my-team"]'


def test_update_moves_the_airflow_files_with_the_students_edits(
    template_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
):
    """The migration (migrations/v2_0_0_airflow_paths.py) merges an edited DAG into its new
    place, three-way, and says so: the edit and the new template are both there, without
    conflict; the unedited overview needs no merge; the old paths are gone."""
    template = make_release_repo(template_dir, tmp_path / "template")
    answers = {"orchestrator": "prefect", "docs_language": "fr"}
    project = student_project(template, answers, "1.0.0")
    old_dag = project / OLD_DAG
    assert DAG_TAGS in old_dag.read_text()
    old_dag.write_text(old_dag.read_text().replace(DAG_TAGS, STUDENT_TAGS))
    commit_all(project, "Tag my team's DAG")
    capfd.readouterr()  # only what the update prints counts below

    run_update(project, defaults=True, overwrite=True, unsafe=True, quiet=True)

    migration_said = capfd.readouterr().out.splitlines()
    assert migration_said == [f"Your edits of {OLD_DAG} moved to {NEW_DAG}: merged"]
    assert not list(project.rglob("*.rej")), "the update left conflicts"
    for old, new in AIRFLOW_MOVES.items():
        assert not (project / old).exists(), old
        assert (project / new).is_file(), new
    assert not (project / "pipelines" / "airflow").exists()
    dag = (project / NEW_DAG).read_text()
    assert STUDENT_TAGS in dag and "@teardown" in dag
    assert "<<<<<<<" not in dag
    overview = (project / NEW_OVERVIEW).read_text()
    assert overview.startswith("# Airflow : vue d’ensemble")
    fresh = render_at(template, project.parent / "fresh", answers, "2.0.0")
    edited = {f"{PACKAGE}/training.py", "notes/experiments.md", NEW_DAG}
    assert differences(project, fresh) == edited


def test_update_without_the_airflow_files(template_dir: Path, tmp_path: Path):
    """Rendered without Airflow, the project crosses the migration untouched."""
    template = make_release_repo(template_dir, tmp_path / "template")
    answers = {"orchestrator": "dagster", "include_airflow": False}
    project = student_project(template, answers, "1.0.0")
    assert not any((project / old).exists() for old in AIRFLOW_MOVES)

    update_keeps_the_edits(template, project, answers, "2.0.0")

    assert not any((project / new).exists() for new in AIRFLOW_MOVES.values())
