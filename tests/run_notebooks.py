"""Execute a rendered project's notebooks with nbclient, as Jupyter would run them.

Run it with the Python of the project's environment (it holds nbclient and
ipykernel), from the project folder; the kernel inherits the environment, so
``PYTHONPATH=src`` and ``MLFLOW_TRACKING_URI`` reach the notebook's code.

    python run_notebooks.py SPEC.json

SPEC is a list of jobs: ``{"notebook": path, "output": path, "solutions": path?,
"replace": {cell_id: source}?, "only": [cell_id]?, "append": [{"id", "source"}]?}``.
``solutions`` swaps in the cells tagged ``exercise`` of the solutions notebook
(matched by cell id); ``append`` adds cells at the end, run in the same kernel.
One JSON line per job is printed: notebook, seconds, error (null when every cell
ran), the text output of each code cell by id (``outputs``: what it printed on either
stream, its value, its error) and, by id, what it printed on stdout alone (``printed``:
the notebook's own ``print`` calls, with the lines libraries print there).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

CELL_TIMEOUT_SECONDS = 600


def with_solutions(notebook: nbformat.NotebookNode, solutions_path: str) -> None:
    solved = nbformat.read(solutions_path, as_version=4)
    answers = {cell.id: cell.source for cell in solved.cells if "exercise" in cell_tags(cell)}
    for cell in notebook.cells:
        if "exercise" in cell_tags(cell):
            cell.source = answers[cell.id]


def cell_tags(cell: nbformat.NotebookNode) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def prepare(job: dict) -> nbformat.NotebookNode:
    notebook = nbformat.read(job["notebook"], as_version=4)
    if job.get("solutions"):
        with_solutions(notebook, job["solutions"])
    for cell in notebook.cells:
        if cell.id in job.get("replace", {}):
            cell.source = job["replace"][cell.id]
    if only := job.get("only"):
        notebook.cells = [cell for cell in notebook.cells if cell.id in only]
    for extra in job.get("append", []):
        notebook.cells.append(nbformat.v4.new_code_cell(extra["source"], id=extra["id"]))
    return notebook


def text_output(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}")
    return "".join(parts)


def printed(cell: nbformat.NotebookNode) -> str:
    return "".join(
        output.text
        for output in cell.get("outputs", [])
        if output.output_type == "stream" and output.name == "stdout"
    )


def execute(job: dict) -> dict:
    notebook = prepare(job)
    folder = Path(job["notebook"]).resolve().parent
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},  # Jupyter's working directory
    )
    started, error = time.monotonic(), None
    try:
        client.execute()
    except CellExecutionError as failure:
        error = str(failure)[-3000:]
    if job.get("output"):
        nbformat.write(notebook, job["output"])
    return {
        "notebook": job["notebook"],
        "seconds": round(time.monotonic() - started, 1),
        "error": error,
        "outputs": {
            cell.id: text_output(cell) for cell in notebook.cells if cell.cell_type == "code"
        },
        "printed": {cell.id: printed(cell) for cell in notebook.cells if cell.cell_type == "code"},
    }


if __name__ == "__main__":
    for job in json.loads(Path(sys.argv[1]).read_text()):
        print(json.dumps(execute(job)), flush=True)
