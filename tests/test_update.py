"""`copier update` brings a template fix into a project and keeps the student's edits."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

import yaml
from copier import run_copy, run_update

PACKAGE = "src/churn_mlops_workshop"
FIXED_LINE = 'PRIMARY_METRIC = "f1"'
OLD_LINE = 'PRIMARY_METRIC = "accuracy"'
EVALUATION = "template/src/{{package_name}}/evaluation.py"


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


def make_template_repo(template_dir: Path, repo: Path) -> None:
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


def test_update_keeps_hand_edits_and_brings_the_fix(template_dir: Path, tmp_path: Path):
    template = tmp_path / "template"
    make_template_repo(template_dir, template)
    project = tmp_path / "project"
    answers = {"orchestrator": "prefect", "notifications": "slack", "docs_language": "fr"}
    run_copy(
        str(template),
        project,
        data=answers,
        vcs_ref="1.0.0",
        defaults=True,
        unsafe=True,
        quiet=True,
    )
    assert OLD_LINE in (project / PACKAGE / "evaluation.py").read_text()
    git(project, "init", "-q", "-b", "main")
    commit_all(project, "Start from the template")

    training = project / PACKAGE / "training.py"
    training.write_text(training.read_text().replace("n_estimators=100", "n_estimators=300"))
    (project / "notes").mkdir()
    (project / "notes" / "experiments.md").write_text("# What I tried\n")
    commit_all(project, "My experiments")

    run_update(project, defaults=True, overwrite=True, unsafe=True, quiet=True)

    assert FIXED_LINE in (project / PACKAGE / "evaluation.py").read_text()
    assert "n_estimators=300" in training.read_text()
    assert (project / "notes" / "experiments.md").read_text() == "# What I tried\n"
    recorded = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert recorded["_commit"] == "1.1.0"
    assert {key: recorded[key] for key in answers} == answers
    assert not list(project.rglob("*.rej")), "the update left conflicts"

    fresh = tmp_path / "fresh"
    run_copy(
        str(template), fresh, data=answers, vcs_ref="1.1.0", defaults=True, unsafe=True, quiet=True
    )
    differing = differences(project, fresh)
    assert differing == {f"{PACKAGE}/training.py", "notes/experiments.md"}


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
