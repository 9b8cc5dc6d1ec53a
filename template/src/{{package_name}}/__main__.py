"""Command line of the project: ``python -m <package> COMMAND``.

Known failures (a missing data file, an unreachable server, a taken port) end
with one clear line on stderr and exit code 1, never with a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

from .errors import report_known_failures
from .messages import text


def generate_data(args: argparse.Namespace) -> None:
    from .config import load_settings
    from .data import generate_customer_data, save_customer_data

    if args.batch or args.drift is not None:
        generate_batch(args)
        return
    output = args.output or load_settings().data_path
    seed = 42 if args.seed is None else args.seed
    frame = generate_customer_data(n_customers=args.rows or 5000, seed=seed)
    path = save_customer_data(frame, output)
    churned = frame["churned"].mean()
    print(text("cli.wrote_customers", rows=len(frame), churned=churned, path=path))


def generate_batch(args: argparse.Namespace) -> None:
    """A batch of new customers (no outcome yet) in BATCH_DIR, drifted if asked."""
    from .config import load_settings
    from .data import write_batch

    rows, drift = args.rows or 1000, args.drift or 0.0
    path = write_batch(load_settings().batch_dir, rows, args.seed, drift)
    if drift:
        print(text("cli.wrote_drifted_batch", drift=drift, rows=rows, path=path))
    else:
        print(text("cli.wrote_batch", rows=rows, path=path))


def monitor(args: argparse.Namespace) -> None:
    """Monitor a batch; on drift, alert and retrain here (the orchestrators use their runs)."""
    from .config import load_settings
    from .monitoring import alert_on_drift, monitor_batch

    settings = load_settings()
    result = monitor_batch(settings, args.batch, tags={"orchestrator": "cli"})
    print(result.report.summary)
    print(text("cli.report", url=result.run_url))
    if not result.drift_detected:
        return
    if args.no_retrain:
        alert_on_drift(result, text("cli.retraining_off"))
        return
    from .pipeline import run_training_pipeline

    alert_on_drift(result, text("cli.retraining_started"))
    tags = {"trigger": "drift", "monitoring_run_id": result.run_id}
    print(run_training_pipeline(settings=settings, tags=tags).summary)


def train(args: argparse.Namespace) -> None:
    from .pipeline import run_training_pipeline

    promotion = run_training_pipeline(args.models, test_size=args.test_size, seed=args.seed)
    print(promotion.summary)


def dev(args: argparse.Namespace) -> None:
    from .devstack import run

    run(only=args.only)


def serve_model(args: argparse.Namespace) -> None:
    from .config import load_settings
    from .serving import serve_champion

    serve_champion(load_settings(), port=args.port)


def predict(args: argparse.Namespace) -> None:
    from .config import load_settings
    from .serving import PREDICTION_COLUMN, predict_with_champion

    predictions = predict_with_champion(load_settings(), args.input, args.output)
    churn_rate = predictions[PREDICTION_COLUMN].mean()
    print(text("cli.wrote_predictions", rows=len(predictions), churn=churn_rate, path=args.output))


def classroom_secrets(args: argparse.Namespace) -> None:
    """Write the classroom server's missing secrets (``make classroom-up`` runs it first)."""
    from .classroom import write_server_secrets

    added = write_server_secrets(args.env_file)
    key = "classroom.secrets_written" if added else "classroom.secrets_kept"
    print(text(key, path=args.env_file, count=len(added)))


def classroom_users(args: argparse.Namespace) -> None:
    """Create the logins asked for, in the server's mlflow container; print every login."""
    from .classroom import (
        connect_as_teacher,
        create_logins,
        login_names,
        read_logins,
        write_logins,
    )
    from .config import load_settings

    names = login_names(args.names, args.count)
    connect_as_teacher()
    known = read_logins(sys.stdin) if not sys.stdin.isatty() else {}
    settings = load_settings()
    logins = dict(known)
    try:  # the logins made before a failure are printed too: their passwords exist only here
        for login in create_logins(names, known, settings.experiment_name, settings.model_name):
            logins[login.login] = login
    finally:
        if logins:
            write_logins(logins.values(), sys.stdout)
        print(text("classroom.logins_created", count=len(logins) - len(known)), file=sys.stderr)


def classroom_handouts(args: argparse.Namespace) -> None:
    """One .env file per student, from the logins the server printed."""
    from .classroom import write_handouts

    folder = args.logins.parent / "handouts"
    written = write_handouts(args.logins, args.env_file, folder)
    print(text("classroom.handouts_written", count=len(written.students), folder=folder))
    if written.workers is not None:
        print(text("classroom.worker_handout_written", path=written.workers))


def classroom_board(args: argparse.Namespace) -> None:
    """Who has a champion, with which score, and when they last ran."""
    from .classroom import (
        BOARD_EXPERIMENT,
        board_lines,
        class_board,
        connect_as_teacher,
        publish_board,
    )
    from .config import load_settings
    from .evaluation import PRIMARY_METRIC

    connect_as_teacher()
    settings = load_settings()
    rows = class_board(settings.experiment_name, settings.model_name, PRIMARY_METRIC)
    print("\n".join(board_lines(rows, PRIMARY_METRIC)))
    publish_board(rows, PRIMARY_METRIC)
    print(text("classroom.board_published", experiment=BOARD_EXPERIMENT))


def help_text(option: str) -> str:
    return text(f"cli.help.{option}")


class CatalogHelpFormatter(argparse.HelpFormatter):
    """argparse's usage line, with the catalog's word for "usage"."""

    def add_usage(self, usage, actions, groups, prefix=None) -> None:
        super().add_usage(usage, actions, groups, text("cli.usage") if prefix is None else prefix)


class CatalogArgumentParser(argparse.ArgumentParser):
    """A parser that speaks the class's language.

    argparse writes its own words (the usage line, its section titles, the -h option, the
    start of its errors) in English; this parser takes them from the catalog. The details
    of a refused argument stay argparse's own.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(add_help=False, formatter_class=CatalogHelpFormatter, **options)
        self.options = self.add_argument_group(text("cli.options"))
        self.options.add_argument("-h", "--help", action="help", help=help_text("help"))

    def add_argument(self, *names: str, **options: Any) -> argparse.Action:
        """An option (``--name``) is listed under the catalog's title for options."""
        if names and names[0].startswith("-"):
            return self.options.add_argument(*names, **options)
        return super().add_argument(*names, **options)

    def error(self, message: str) -> NoReturn:
        """One line, as every known failure: what was refused, and where the help is."""
        refused = text("cli.refused", details=message, command=self.prog)
        self.exit(2, text("errors.line", error=refused) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = CatalogArgumentParser(
        prog=f"python -m {__package__}", description=text("cli.description", package=__package__)
    )
    commands = parser.add_subparsers(title=text("cli.commands"), dest="command", required=True)

    command = commands.add_parser("generate-data", help=help_text("generate_data"))
    command.add_argument("--rows", type=int, help=help_text("rows"))
    command.add_argument("--seed", type=int, help=help_text("seed"))
    command.add_argument("--output", help=help_text("output_data"))
    command.add_argument("--batch", action="store_true", help=help_text("batch"))
    command.add_argument(
        "--drift",
        type=float,
        nargs="?",
        const=0.8,
        metavar="STRENGTH",
        help=help_text("drift"),
    )
    command.set_defaults(handler=generate_data)

    command = commands.add_parser("monitor", help=help_text("monitor"))
    command.add_argument("--batch", type=Path, help=help_text("monitor_batch"))
    command.add_argument("--no-retrain", action="store_true", help=help_text("no_retrain"))
    command.set_defaults(handler=monitor)

    command = commands.add_parser("train", help=help_text("train"))
    command.add_argument("--models", nargs="+", help=help_text("models"))
    command.add_argument("--test-size", type=float, default=0.2)
    command.add_argument("--seed", type=int, default=42)
    command.set_defaults(handler=train)

    command = commands.add_parser("dev", help=help_text("dev"))
    command.add_argument("--only", nargs="+", metavar="SERVICE", help=help_text("only"))
    command.set_defaults(handler=dev)

    command = commands.add_parser("serve-model", help=help_text("serve_model"))
    command.add_argument("--port", type=int, help=help_text("port"))
    command.set_defaults(handler=serve_model)

    command = commands.add_parser("predict", help=help_text("predict"))
    command.add_argument("--input", type=Path, required=True, help=help_text("input"))
    command.add_argument("--output", type=Path, required=True, help=help_text("output_predictions"))
    command.set_defaults(handler=predict)

    command = commands.add_parser("classroom-secrets", help=help_text("classroom_secrets"))
    command.add_argument("--env-file", type=Path, default=Path("classroom/.env"))
    command.set_defaults(handler=classroom_secrets)

    command = commands.add_parser("classroom-users", help=help_text("classroom_users"))
    command.add_argument("names", nargs="*", metavar="LOGIN", help=help_text("logins"))
    command.add_argument("--count", type=int, help=help_text("count"))
    command.set_defaults(handler=classroom_users)

    command = commands.add_parser("classroom-handouts", help=help_text("classroom_handouts"))
    command.add_argument("--logins", type=Path, default=Path("classroom/logins.csv"))
    command.add_argument("--env-file", type=Path, default=Path("classroom/.env"))
    command.set_defaults(handler=classroom_handouts)

    command = commands.add_parser("classroom-board", help=help_text("classroom_board"))
    command.set_defaults(handler=classroom_board)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_known_failures(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
