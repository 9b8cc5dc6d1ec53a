"""Fixtures of the template's tests.

Rendering uses a plain-folder snapshot of the working tree, so tests see
uncommitted changes. One virtual environment with the generated project's
dependencies is built per test session (once across xdist workers, under a
file lock) and shared by every test that runs project code.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

from helpers import ProjectEnv, create_project_env, render, shared_tmp, snapshot_template

ENV_ANSWERS = {"orchestrator": "both", "include_notebooks": True}


def pytest_configure(config: pytest.Config) -> None:
    """Give SIGINT back its default when the run started as a background job.

    A shell starts `command &` with SIGINT ignored, and every process the tests start
    inherits that: the Ctrl+C they send, as a student presses it (to `make dev`,
    `serve-model`, a deploy script), would do nothing. A handler, unlike "ignored", is
    reset in each child, so the children get SIGINT's default again.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def render_project(
    template_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Path]:
    """Render with the given answers into a fresh folder named after ``name``."""

    def _render(name: str, **answers: object) -> Path:
        return render(template_dir, tmp_path_factory.mktemp(name) / "project", **answers)

    return _render


@pytest.fixture(scope="session")
def project_env(
    template_dir: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str
) -> ProjectEnv:
    shared = shared_tmp(tmp_path_factory, worker_id)
    venv = shared / "project-env"
    with FileLock(str(shared / "project-env.lock")):
        if (venv / "ready").exists():
            return ProjectEnv(venv)
        project = render(template_dir, shared / "env-project", **ENV_ANSWERS)
        return create_project_env(venv, project)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each fault's figures (injection to detection, to recovery), as the tests recorded them."""
    reports = [r for key in ("passed", "failed") for r in terminalreporter.stats.get(key, [])]
    figures = [
        value for r in reports for name, value in r.user_properties if name == "fault figures"
    ]
    if figures:
        terminalreporter.section("fault figures")
        for line in figures:
            terminalreporter.write_line(line)
