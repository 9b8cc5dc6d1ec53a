"""Memory of a process tree, or of a Compose stack's containers, as the benches report it."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

UNITS_IN_MIB = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (children of every thread, not only the main one)."""
    kids: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):  # a thread or process may end meanwhile
            kids += [int(child) for child in children.read_text().split()]
    return [pid, *(grandchild for kid in kids for grandchild in process_tree(kid))]


def pss_mib(pid: int) -> float:
    """Proportional set size of one process: shared pages are split among their users."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0.0  # ended meanwhile
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith("Pss:")), 0.0)


def tree_pss_mib(pid: int) -> float:
    return sum(pss_mib(member) for member in process_tree(pid))


def containers_mib(compose: list[str], project: Path) -> dict[str, float]:
    """MiB each running container of a Compose stack uses now (``docker stats``), by name."""
    ids = subprocess.run(
        [*compose, "ps", "-q"], cwd=project, capture_output=True, text=True, check=True
    ).stdout.split()
    stats = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{json .}}", *ids],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    usage = {}
    for line in stats:
        row = json.loads(line)
        amount = row["MemUsage"].split(" / ")[0]
        usage[row["Name"]] = float(amount[:-3]) * UNITS_IN_MIB[amount[-3:]]
    return usage
