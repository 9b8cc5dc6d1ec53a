"""The Prefect exercises, as a class does them: against a real `make dev` stack.

One teacher's copy (orchestrator=prefect, include_solutions=true) gets the dev stack,
and no data step: the first exercise command writes the seeded data set, as in the
quick start. First the untouched exercise file: every step's check fails, each point with the
hint of the project's catalog, including after steps 1 and 2 were run as plain Python.
Then a step 2 without retries, which fails in a flow too. Then the teacher's solution:
each step run as a student runs it (step 5 waits for a run fired by the schedule), then
one `check` of every step, which must pass every point.

A French teacher's copy then checks its untouched file against the same servers:
its lines are the French catalog's.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import (
    Deadline,
    DevStack,
    ProjectEnv,
    assert_check_report,
    check_lines,
    messages,
    prefect_get,
    prefect_post,
    sentence_pattern,
    stack_env,
    wait_for_output,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("prefect-exercises")]

EXERCISES = "pipelines/workshop/prefect/Prefect_Exercises.py"
SOLUTION = "pipelines/workshop/prefect/Prefect_Exercises_solution.py"
# The points each step's check reports: the keys of its ✓/✗ pairs in messages.toml.
POINTS = {
    1: ["flow", "tasks", "completed"],
    2: ["retries", "delays", "recovered"],
    3: ["cached", "parallel"],
    4: ["runs", "models", "champion"],
    5: ["deployed", "cron", "typed", "scheduled"],
    6: ["success", "failure", "states"],
}


@dataclass
class Stack:
    project: Path
    env: ProjectEnv
    servers: dict[str, str]

    def run(self, project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.env.run(
            [str(self.env.python), *args], project, timeout=timeout, check=False, **self.servers
        )


@pytest.fixture(scope="module")
def project(render_project) -> Path:
    return render_project("prefect-exercises", orchestrator="prefect", include_solutions=True)


@pytest.fixture(scope="module")
def stack(project: Path, project_env_for) -> Iterator[Stack]:
    env = project_env_for(project)
    servers = {
        **stack_env("prefect"),
        # A schedule every minute: step 5 waits for one tick, not two.
        "SCHEDULE_CRON": "* * * * *",
        "PREFECT_HOME": str(project / ".workshop" / "client-prefect"),
    }
    # No `make data`: the first command that needs the data writes it (the quick start).
    with DevStack(env, project, **servers):
        yield Stack(project, env, servers)


def catalog(project: Path) -> dict:
    return messages(project)["exercises"]["prefect"]


def expected_report(project: Path, mark: str, steps: list[int]) -> list[tuple[str, str]]:
    """Every point of the steps, in order, with ``mark`` and its catalog sentence."""
    suffix = "_ok" if mark == "✓" else "_todo"
    texts = catalog(project)
    return [
        (mark, texts[f"step{step}"][point + suffix]) for step in steps for point in POINTS[step]
    ]


def assert_points(result: subprocess.CompletedProcess, project: Path, step: int, mark: str):
    assert_check_report(result, expected_report(project, mark, [step]))


class TestUntouchedFile:
    """What a student sees before writing anything: every point fails, with its hint,
    including after steps 1 and 2 were run as plain Python."""

    def test_step1_runs_as_plain_python_on_a_fresh_copy(self, stack: Stack):
        """The data set is written by this first command that needs it."""
        data = stack.project / "data" / "customer_data.csv"
        assert not data.exists()
        run = stack.run(stack.project, EXERCISES, "step1")
        assert run.returncode == 0, run.stderr[-3000:]  # plain Python trains fine...
        written = sentence_pattern(messages(stack.project)["data"]["seeded_data_written"])
        assert written.search(run.stderr) and data.is_file(), run.stderr[-3000:]

    def test_step2_without_retries_fails_on_the_waking_database(self, stack: Stack):
        run = stack.run(stack.project, EXERCISES, "step2")
        assert run.returncode != 0
        assert "ConnectionError" in run.stderr

    def test_check_fails_every_point_of_every_step(self, stack: Stack):
        """`check` alone reports every step: ...nothing of steps 1 and 2 is on the server."""
        check = stack.run(stack.project, EXERCISES, "check")
        assert_check_report(check, expected_report(stack.project, "✗", list(POINTS)))

    def test_step5_says_deploy_is_still_a_todo(self, stack: Stack):
        run = stack.run(stack.project, EXERCISES, "step5")
        assert run.returncode == 1
        expected = catalog(stack.project)["step5"]["deploy_is_todo"]
        assert run.stderr.strip().splitlines()[-1] == f"error: {expected}"

    def test_a_wrong_command_gets_the_usage(self, stack: Stack):
        run = stack.run(stack.project, EXERCISES, "check", "step9")
        assert run.returncode == 2
        assert "usage: python pipelines/workshop/prefect/Prefect_Exercises.py" in run.stderr


def test_a_step2_without_retries_fails_in_a_flow_too(stack: Stack):
    """The solution with its retries taken out: the database's cold start is deterministic,
    so the flow run fails, and so does the check."""
    solution = (stack.project / SOLUTION).read_text()
    decorator = "@task(retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=1))"
    assert decorator in solution
    no_retries = stack.project / "pipelines/workshop/prefect/No_Retries.py"
    no_retries.write_text(solution.replace(decorator, "@task"))
    run = stack.run(stack.project, str(no_retries.relative_to(stack.project)), "step2")
    assert run.returncode != 0 and "ConnectionError" in run.stderr, run.stdout[-2000:]
    check = stack.run(stack.project, str(no_retries.relative_to(stack.project)), "check", "step2")
    lines = check_lines(check)
    assert [mark for mark, _ in lines] == ["✗", "✗", "✗"], check.stdout
    assert check.returncode == 1


class TestSolution:
    """The teacher's copy: each step run as the student would; then every check passes."""

    @pytest.mark.parametrize("step", [1, 2, 3, 4])
    def test_step_runs(self, stack: Stack, step: int):
        run = stack.run(stack.project, SOLUTION, f"step{step}")
        assert run.returncode == 0, run.stderr[-3000:]

    def test_step5_deploys_and_the_schedule_fires_a_run(self, stack: Stack):
        log = stack.project / ".workshop" / "exercise-step5.out"
        with log.open("w") as out:
            watcher = subprocess.Popen(
                [str(stack.env.python), SOLUTION, "step5"],
                cwd=stack.project,
                env=stack.env.environ(stack.project, **stack.servers),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deployed = catalog(stack.project)["step5"]["deployed"].split("{")[0]  # "Deployed..."
            wait_for_output(watcher, log, deployed, Deadline.DEPLOYED, "step5")
            api = stack.servers["PREFECT_API_URL"]
            deployment = prefect_get(
                f"{api}/deployments/name/training-pipeline/prefect-exercises-solution"
            )

            def completed_scheduled_run() -> bool:
                runs = prefect_post(
                    f"{api}/flow_runs/filter",
                    {"deployments": {"id": {"any_": [deployment["id"]]}}},
                ).json()
                return any(r["auto_scheduled"] and r["state_name"] == "Completed" for r in runs)

            wait_until(completed_scheduled_run, Deadline.SCHEDULED_RUN, "no scheduled run ended")
        finally:
            watcher.send_signal(signal.SIGINT)
            watcher.wait(timeout=Deadline.STOPPED)
        paused = messages(stack.project)["prefect"]["schedule"]["paused"]
        assert sentence_pattern(paused).search(log.read_text())

    def test_step6_runs(self, stack: Stack):
        run = stack.run(stack.project, SOLUTION, "step6")
        assert run.returncode == 0, run.stderr[-3000:]

    def test_every_check_passes(self, stack: Stack):
        """One `check` for the six steps: each asks the servers what its step left there
        (step 6's runs the pipeline twice more, against a webhook of its own)."""
        check = stack.run(stack.project, SOLUTION, "check", timeout=600)
        assert_check_report(check, expected_report(stack.project, "✓", list(POINTS)))


def test_a_french_class_reads_its_checks_in_french(render_project, project_env_for, stack: Stack):
    """A French teacher's copy checks its untouched file against the same servers."""
    french = render_project("prefect-exercises-fr", orchestrator="prefect", docs_language="fr")
    french_env = project_env_for(french)
    check = french_env.run(
        [str(french_env.python), EXERCISES, "check", "step2"],
        french,
        check=False,
        **stack.servers,
    )
    assert_points(check, french, 2, "✗")
    english = catalog(stack.project)["step2"]
    assert not any(english[f"{point}_todo"] in check.stdout for point in POINTS[2])
    title = sentence_pattern(messages(french)["exercises"]["check_title"])
    assert title.fullmatch(check.stdout.splitlines()[0]), check.stdout
