"""Print how long rendering takes: one `copier copy` of the defaults, and the whole matrix.

Usage: uv run python bench/bench_render.py [--copies 7] [--matrix-runs 1]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATRIX_COMMAND = [sys.executable, "-m", "pytest", "-q", "tests/test_render_matrix.py"]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import render, snapshot_template  # noqa: E402


def time_default_copy(template: Path, copies: int) -> list[float]:
    durations = []
    for _ in range(copies):
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            render(template, Path(folder) / "project")
            durations.append(time.perf_counter() - started)
    return durations


def time_matrix(runs: int) -> list[float]:
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(MATRIX_COMMAND, cwd=ROOT, check=True, capture_output=True)
        durations.append(time.perf_counter() - started)
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=7)
    parser.add_argument("--matrix-runs", type=int, default=1, help="0 skips the matrix")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        template = snapshot_template(Path(folder))
        copies = time_default_copy(template, args.copies)
    print(
        f"copier copy, default answers: median {statistics.median(copies):.2f} s over {len(copies)}"
    )
    if args.matrix_runs < 1:
        return  # --matrix-runs 0: the copy figure only
    matrix = time_matrix(args.matrix_runs)
    print(
        f"render-and-check matrix (648 combinations, pytest -n 4): median "
        f"{statistics.median(matrix):.0f} s over {len(matrix)}"
    )


if __name__ == "__main__":
    main()
