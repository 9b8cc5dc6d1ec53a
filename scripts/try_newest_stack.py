"""Try a generated project on the newest releases of its stack that the index resolves.

Renders the `both` project from the working tree, lifts its exact pins of mlflow, prefect,
dagster, dagster-webserver, scikit-learn and pandas (the caps fastapi<0.151 and
sqlalchemy<2.1 stay), installs it as a student does (`uv sync --all-extras`), prints the
versions it got against the pinned ones, then runs:

- the generated project's own tests;
- one story with real servers, as a student lives it: `make data`, `make dev` (MLflow,
  Prefect server and worker, Dagster webserver, code servers and daemon), `make train`
  (logs to MLflow, crowns a champion), `make prefect-deploy` on a one-minute cron until the
  worker has run a scheduled run (which logs to MLflow), `make dagster-pipeline` (every
  asset materialized, logged to MLflow) and `make predict` with the champion.

It ends with what broke, or "all passed", and exits 1 on any failure.

    uv run python scripts/try_newest_stack.py                 # the newest stack
    uv run python scripts/try_newest_stack.py --pinned        # the same on today's pins
    uv run python scripts/try_newest_stack.py --python 3.13   # another python_version
    uv run python scripts/try_newest_stack.py --without-caps  # is a cap still needed?

Everything goes into a new folder under /tmp (kept: the project and a log per step);
the servers run on free ports and are stopped at the end. About 4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import (  # noqa: E402 - rendered and started as the template's tests do
    DevStack,
    ProjectEnv,
    free_port,
    python_interpreter,
    render,
    snapshot_template,
)

LIFTED = ["mlflow", "prefect", "dagster", "dagster-webserver", "scikit-learn", "pandas"]
KEPT_CAPS = ["fastapi<0.151", "sqlalchemy<2.1"]  # why: the comment above them in pyproject.toml
SHOWN = [*LIFTED, "fastapi", "sqlalchemy"]
WORKSHOP = "pipelines/workshop/prefect/Prefect_Workshop.py"  # what `make prefect-deploy` runs
EXPERIMENT = "churn-prediction"  # MLFLOW_EXPERIMENT_NAME in .env.example
SCHEDULED_RUN_TIMEOUT = 600  # from deploy to a finished run, one-minute cron: 1-3 minutes


class Broke(Exception):
    """A step failed; the message says how."""


@dataclass
class Step:
    name: str
    passed: bool | None = None  # None: not run, a step it needs failed
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Trial:
    """The project under trial, its environment, and each step's outcome."""

    workdir: Path
    project: Path
    package: str
    python: str  # the interpreter, by path
    ports: dict[str, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def env(self) -> ProjectEnv:
        return ProjectEnv(self.project / ".venv")  # where `uv sync` puts it

    def step(self, name: str, action: Callable[[], str], needs: tuple[str, ...] = ()) -> bool:
        """Run one step, unless a step it needs failed; print and record the outcome."""
        step = Step(name)
        self.steps.append(step)
        if failed := [s.name for s in self.steps if s.name in needs and not s.passed]:
            step.detail = f"not run: {', '.join(failed)} failed"
            print(f"  --   {name}: {step.detail}", flush=True)
            return False
        print(f"  ...  {name}", flush=True)
        start = time.monotonic()
        try:
            step.detail, step.passed = action(), True
        except Broke as error:
            step.detail, step.passed = str(error), False
        except Exception as error:  # noqa: BLE001 - every failure goes into the summary
            step.detail, step.passed = f"{type(error).__name__}: {error}", False
        step.seconds = time.monotonic() - start
        print(f"  {'PASS' if step.passed else 'FAIL'} {name}: {step.detail}", flush=True)
        return step.passed

    def run(self, name: str, args: list[str], **env: str) -> str:
        """A command in the project folder with the story's ports; its output (in logs/)."""
        log = self.logs / f"{name}.log"
        with log.open("w") as out:
            result = subprocess.run(
                args,
                cwd=self.project,
                env=self.env.environ(self.project, **self.ports, **env),
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=900,
            )
        output = log.read_text(errors="replace")
        if result.returncode != 0:
            command = " ".join(args)
            raise Broke(f"`{command}` exited {result.returncode}:\n{tail(output)}\n(see {log})")
        return output


def tail(text: str, lines: int = 12) -> str:
    return "\n".join("      " + line for line in text.rstrip().splitlines()[-lines:])


def last_exception(text: str) -> str:
    """The last line of a traceback in ``text`` (``TypeError: ...``), or ""."""
    raised = re.findall(r"^[\w.]+(?:Error|Exception): .*$", text, re.M)
    return raised[-1] if raised else ""


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1].strip("= ") if text.strip() else ""


def uv(*args: str, cwd: Path | None = None, **kwargs) -> subprocess.CompletedProcess[str]:
    """The uv of the template's dev environment, blind to it: this script runs under
    `uv run`, whose VIRTUAL_ENV would otherwise stand for the project's environment."""
    beside = Path(sys.executable).parent / "uv"
    environ = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    command = [str(beside) if beside.exists() else "uv", *args]
    return subprocess.run(command, cwd=cwd, env=environ, text=True, **kwargs)


# --- Versions ---------------------------------------------------------------------------------


def pinned_versions(pyproject: Path) -> dict[str, str]:
    """The lifted packages' exact pins, from the dependencies and the extras."""
    declared = tomllib.loads(pyproject.read_text())["project"]
    extras = [line for group in declared["optional-dependencies"].values() for line in group]
    pins = {}
    for requirement in map(Requirement, [*declared["dependencies"], *extras]):
        if requirement.name in LIFTED:
            [pin] = requirement.specifier
            pins[requirement.name] = pin.version
    return pins


def lift_pins(pyproject: Path) -> None:
    """`"mlflow==3.17.2"` becomes `"mlflow"`: the resolver takes the newest it can."""
    text = pyproject.read_text()
    for name in LIFTED:
        text, count = re.subn(rf'"{re.escape(name)}==[^"]+"', f'"{name}"', text)
        if count != 1:
            raise Broke(f"pyproject.toml pins {name} {count} times, not once: update LIFTED")
    pyproject.write_text(text)


def drop_caps(pyproject: Path) -> None:
    """The lines `"fastapi<0.151",` and `"sqlalchemy<2.1",` go: is a cap still needed?"""
    text = pyproject.read_text()
    for cap in KEPT_CAPS:
        text, count = re.subn(rf'^\s*"{re.escape(cap)}",\n', "", text, flags=re.M)
        if count != 1:
            raise Broke(f"pyproject.toml declares {cap} {count} times, not once: update KEPT_CAPS")
    pyproject.write_text(text)


def newest_on_index(python: str) -> dict[str, str]:
    """Each package's newest release on the index, whether its dependencies exist or not."""
    compile_ = ["pip", "compile", "--no-deps", "--no-header", "--quiet", "-p", python, "-"]
    listed = uv(*compile_, input="\n".join(SHOWN), capture_output=True, check=True).stdout
    return dict(line.split("==") for line in listed.splitlines() if "==" in line)


# Run in the project's environment: what each installed distribution requires.
EVERY_REQUIREMENT = """
import importlib.metadata, json
found = {f"{d.name} {d.version}": d.requires or [] for d in importlib.metadata.distributions()}
print(json.dumps(found))
"""


def why_not(trial: Trial, name: str, version: str) -> str:
    """Why ``name==version`` does not install beside the project: the installed packages
    whose requirements exclude it, else the first line of the resolver's explanation
    (whole in logs/why-NAME.log)."""
    args = [str(trial.env.python), "-c", EVERY_REQUIREMENT]
    requires = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
    blockers = [
        f"{distribution} requires {requirement}"
        for distribution, lines in requires.items()
        for requirement in map(Requirement, lines)
        if canonicalize_name(requirement.name) == name
        and (requirement.marker is None or requirement.marker.evaluate({"extra": ""}))
        and not requirement.specifier.contains(version, prereleases=True)
    ]
    if blockers:
        return "; ".join(sorted(blockers))
    wanted = trial.workdir / f"want-{name}.txt"
    wanted.write_text(f"{name}=={version}\n")
    compile_ = ["pip", "compile", "--no-header", "--quiet", "-p", trial.python]
    wanted_too = ["pyproject.toml", "--all-extras", str(wanted)]
    result = uv(*compile_, *wanted_too, cwd=trial.project, capture_output=True)
    if result.returncode == 0:
        return "it resolves when asked for: the resolver preferred other versions"
    (trial.logs / f"why-{name}.log").write_text(result.stderr)
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    causes = [line for line in lines if line.startswith("cause:")] or lines[-1:] or ["?"]
    return causes[0].removeprefix("cause:").strip()


def installed_versions(trial: Trial) -> dict[str, str]:
    code = "import importlib.metadata as m, json, sys\n"
    code += "print(json.dumps({name: m.version(name) for name in sys.argv[1:]}))"
    args = [str(trial.env.python), "-c", code, *SHOWN]
    return json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


def version_table(pinned: dict[str, str], got: dict[str, str], index: dict[str, str]) -> str:
    caps = {req.name: str(req.specifier) for req in map(Requirement, KEPT_CAPS)}
    rows = [f"  {'package':<20}{'pinned':<12}{'installed':<12}newest on the index"]
    for name in SHOWN:
        pin = pinned.get(name) or caps[name]
        newer = name in pinned and Version(got[name]) > Version(pin)
        mark = "   <- newer than the pin" if newer else ""
        rows.append(f"  {name:<20}{pin:<12}{got[name]:<12}{index.get(name, '?')}{mark}")
    return "\n".join(rows)


# --- Steps ------------------------------------------------------------------------------------


def install(trial: Trial) -> str:
    """`make install` on the Python the answers name; bytecode compiled once, here."""
    log = trial.logs / "install.log"
    with log.open("w") as out:
        sync = ["sync", "--all-extras", "--compile-bytecode", "--python", trial.python]
        result = uv(*sync, cwd=trial.project, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise Broke(f"uv sync exited {result.returncode}:\n{tail(log.read_text())}\n(see {log})")
    return "uv sync --all-extras"


def project_tests(trial: Trial) -> str:
    python = str(trial.env.python)
    return last_line(trial.run("project-tests", [python, "-m", "pytest", "-p", "no:cacheprovider"]))


def finished_mlflow_runs(trial: Trial, tag: str) -> int:
    """FINISHED runs carrying ``tag`` (an orchestrator's run id) on the story's MLflow server."""
    api = f"http://127.0.0.1:{trial.ports['MLFLOW_PORT']}/api/2.0/mlflow"
    experiment = requests.get(
        f"{api}/experiments/get-by-name", params={"experiment_name": EXPERIMENT}, timeout=10
    ).json()["experiment"]
    search = {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000}
    runs = requests.post(f"{api}/runs/search", json=search, timeout=10).json().get("runs", [])
    tagged = [run for run in runs if tag in {t["key"] for t in run["data"].get("tags", [])}]
    statuses = [run["info"]["status"] for run in tagged]
    if "FINISHED" not in statuses:
        raise Broke(f"no FINISHED MLflow run tagged {tag}: {statuses}")
    return statuses.count("FINISHED")


def train(trial: Trial) -> str:
    summary = last_line(trial.run("make-train", ["make", "train"]))
    if "is the new champion" not in summary:
        raise Broke(f"the first training should crown a champion; it printed: {summary}")
    return summary


def scheduled_prefect_run(trial: Trial) -> str:
    """`make prefect-deploy` on a one-minute cron, watched until a scheduled run ends,
    then Ctrl+C, which pauses the schedule."""
    log = trial.logs / "prefect-deploy.log"
    environ = trial.env.environ(trial.project, **trial.ports, SCHEDULE_CRON="* * * * *")
    with log.open("w") as out:
        deploy = subprocess.Popen(
            [str(trial.env.python), WORKSHOP, "deploy"],
            cwd=trial.project,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ended = re.compile(r"^\s+(\S+): (\w+) \(\d\d:\d\d:\d\d\)$", re.M)  # what the watch prints
    deadline = time.monotonic() + SCHEDULED_RUN_TIMEOUT
    try:
        while not (match := ended.search(log.read_text(errors="replace"))):
            if deploy.poll() is not None:
                raise Broke(f"deploy exited {deploy.returncode}:\n{tail(log.read_text())}")
            if time.monotonic() > deadline:
                server = trial.project / ".workshop/logs/prefect-server.log"
                raised = last_exception(server.read_text(errors="replace"))
                said = f": the Prefect server logged {raised!r}" if raised else ""
                raise Broke(f"no scheduled run ended in {SCHEDULED_RUN_TIMEOUT} s{said} ({log})")
            time.sleep(2)
    finally:
        if deploy.poll() is None:
            os.killpg(deploy.pid, signal.SIGINT)
            try:
                deploy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(deploy.pid, signal.SIGKILL)
                raise Broke(f"deploy did not stop on Ctrl+C within 60 s (see {log})") from None
    run_name, state = match.groups()
    if state != "Completed":
        raise Broke(
            f"the scheduled run {run_name} ended {state} (.workshop/logs/prefect-worker.log)"
        )
    if "Schedule paused" not in log.read_text():
        raise Broke(f"Ctrl+C did not pause the schedule:\n{tail(log.read_text())}")
    runs = finished_mlflow_runs(trial, "prefect_flow_run_id")
    return f"scheduled run {run_name} Completed, {runs} MLflow runs from Prefect"


def dagster_pipeline(trial: Trial) -> str:
    trial.run("make-dagster-pipeline", ["make", "dagster-pipeline"])
    runs = finished_mlflow_runs(trial, "dagster_run_id")
    return f"every asset materialized, {runs} MLflow runs from Dagster"


def predict(trial: Trial) -> str:
    output = trial.run("make-predict", ["make", "predict", "OUTPUT=predictions.csv"])
    if len((trial.project / "predictions.csv").read_text().splitlines()) < 2:
        raise Broke(f"predictions.csv holds no rows:\n{tail(output)}")
    return last_line(output)


def story(trial: Trial) -> None:
    """A student's day: the servers of `make dev` up in one terminal, verbs in another."""
    names = ["MLFLOW_PORT", "PREFECT_PORT", "DAGSTER_PORT", "SERVING_PORT"]
    trial.ports = {name: str(free_port()) for name in names}
    if not trial.step("make data", lambda: last_line(trial.run("make-data", ["make", "data"]))):
        return
    devstack = DevStack(trial.env, trial.project, trial.package, **trial.ports)

    def dev_up(servers: contextlib.ExitStack) -> str:
        try:
            servers.enter_context(devstack)
        except AssertionError:  # exited early or never ready: what it printed says which
            printed = devstack.output()
            said = [line for line in printed.splitlines() if line.startswith("error:")][:1]
            summary = " ".join([*said, last_exception(printed)]).strip()
            summary = summary or "the servers did not come up"
            details = f"{tail(devstack.output(), 25)}\n(see {devstack.log_path})"
            raise Broke(f"{summary}\n{details}") from None
        return "every server healthy"

    try:
        with contextlib.ExitStack() as servers:  # Ctrl+C to `make dev` at the end
            if not trial.step("make dev", lambda: dev_up(servers)):
                return
            trial.step("make train", lambda: train(trial))
            after_train = ("make train",)
            trial.step("make prefect-deploy", lambda: scheduled_prefect_run(trial), after_train)
            trial.step("make dagster-pipeline", lambda: dagster_pipeline(trial))
            trial.step("make predict", lambda: predict(trial), after_train)
    except Exception as error:  # noqa: BLE001 - a stack that does not stop is a failure too
        trial.steps.append(Step("make dev stops on Ctrl+C", False, repr(error)))


# --- Main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pinned", action="store_true", help="keep the pins (a baseline)")
    parser.add_argument("--without-caps", action="store_true", help=f"drop {KEPT_CAPS}")
    parser.add_argument("--python", default="3.12", help="the python_version answer")
    args = parser.parse_args()
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:  # started as a background job:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl+C reaches the servers

    workdir = Path(tempfile.mkdtemp(prefix="try-newest-stack-"))
    (workdir / "logs").mkdir()
    template = snapshot_template(workdir / "template")
    project = render(template, workdir / "project", orchestrator="both", python_version=args.python)
    package = yaml.safe_load((project / ".copier-answers.yml").read_text())["package_name"]
    trial = Trial(workdir, project, package, python_interpreter(args.python))
    print(f"Rendered the `both` project into {project}; logs in {trial.logs}")

    pyproject = project / "pyproject.toml"
    pinned = pinned_versions(pyproject)
    stack = "pinned stack" if args.pinned else "newest stack"
    if not args.pinned:
        lift_pins(pyproject)
        print(f"Pins lifted: {', '.join(LIFTED)}.")
    if args.without_caps:
        drop_caps(pyproject)
        stack += " without the caps"
    print(f"Caps {'lifted' if args.without_caps else 'kept'}: {', '.join(KEPT_CAPS)}.")
    index = newest_on_index(trial.python)
    notes: list[str] = []
    if trial.step("install", lambda: install(trial)):
        got = installed_versions(trial)
        notes.append(version_table(pinned, got, index))
        if not args.pinned:
            for name in LIFTED:
                if Version(index[name]) > Version(got[name]):
                    reason = why_not(trial, name, index[name])
                    notes.append(f"  {name} {index[name]} does not install here: {reason}")
        print("\n".join(notes), flush=True)
        trial.step("project tests", lambda: project_tests(trial))
        story(trial)

    print(f"\n== Summary: the {stack}, Python {args.python} ==")
    print("\n".join(notes))
    for step in trial.steps:
        verdict = {True: "PASS", False: "FAIL", None: "--  "}[step.passed]
        first_line = step.detail.splitlines()[0] if step.detail else ""
        print(f"  {verdict} {step.name:<22}{step.seconds:>5.0f} s  {first_line}")
    print(f"  project and logs: {workdir}")
    if broke := [step for step in trial.steps if step.passed is False]:
        print("\nBROKE:")
        for step in broke:
            print(f"- {step.name}: {step.detail}")
        return 1
    print("\nall passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
