"""Migration to release 2.0.0: the student's edits of the Airflow files follow them.

Release 2.0.0 moved the Airflow reference DAG and overview to the workshop's layout (see
MOVED). `copier update` deletes the old paths and renders the new ones, so without this
script an edit the student made to an old file would be lost. Run after the update, from
the project's folder, it merges each edited old file into its new place, three-way as
Copier merges any file: base = the old file as the old release rendered it, theirs = the
student's last committed copy, ours = the new file. Nothing happens when the old files were
absent or unedited. One line per merged file says whether conflicts are left to resolve.

copier.yml runs it with Copier's own Python (which has copier and yaml), from the template
version being applied; it is template tooling, never rendered into a project.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import copier
import yaml

MOVED = {
    "pipelines/airflow/churn_training_dag.py": "pipelines/examples/Airflow_ML_Pipeline.py",
    "docs/airflow_overview.md": "pipelines/workshop/airflow/airflow_overview.md",
}
# git merge-file's labels for the new file, the base and the student's copy: the words of
# Copier's own conflict markers, so that every conflict of an update reads the same.
MERGE_LABELS = ["-L", "after updating", "-L", "last update", "-L", "before updating"]


def committed(path: str) -> str | None:
    """The file as the project's last commit holds it: the update already deleted the old
    paths from the disk. None when the commit has no such file."""
    shown = subprocess.run(["git", "show", f"HEAD:./{path}"], capture_output=True, text=True)
    return shown.stdout if shown.returncode == 0 else None


def render_old_release(answers: dict, destination: Path) -> None:
    """Render the project again as its previous release did, with the student's answers."""
    data = {key: value for key, value in answers.items() if not key.startswith("_")}
    copier.run_copy(
        answers["_src_path"],
        destination,
        data=data,
        defaults=True,
        vcs_ref=answers["_commit"],
        unsafe=True,
        quiet=True,
    )


def carry_edits(old: str, new: str, old_release: Path) -> None:
    """Merge the student's edits of ``old`` into ``new``; print the verdict."""
    base = old_release / old
    if not base.is_file() or not Path(new).is_file():
        return
    student_copy = committed(old)
    if base.read_text() == student_copy:
        return  # never edited: the new file is all the student needs
    mine = old_release / "mine"
    mine.write_text(student_copy)
    merge = subprocess.run(["git", "merge-file", *MERGE_LABELS, new, base, mine])
    verdict = "conflicts to resolve" if merge.returncode else "merged"
    print(f"Your edits of {old} moved to {new}: {verdict}")


def main() -> None:
    present = [old for old in MOVED if committed(old) is not None]
    answers = yaml.safe_load(committed(".copier-answers.yml") or "{}")
    if not present or "_commit" not in answers:
        return  # no old Airflow file, or no release recorded to render it from
    with tempfile.TemporaryDirectory() as old_release:
        render_old_release(answers, Path(old_release))
        for old in present:
            carry_edits(old, MOVED[old], Path(old_release))


if __name__ == "__main__":
    main()
