"""Memory of a process tree, as the benches report it."""

from __future__ import annotations

import contextlib
from pathlib import Path


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
