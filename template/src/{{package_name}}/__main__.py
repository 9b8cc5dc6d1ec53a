"""Command line of the project: ``python -m <package> COMMAND``.

Known failures (a missing data file, an unreachable server, a taken port) end
with one clear line on stderr and exit code 1, never with a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import report_known_failures


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
    print(f"Wrote {len(frame)} customers ({frame['churned'].mean():.1%} churned) to {path}")


def generate_batch(args: argparse.Namespace) -> None:
    """A batch of new customers (no outcome yet) in BATCH_DIR, drifted if asked."""
    from .config import load_settings
    from .data import write_batch

    rows, drift = args.rows or 1000, args.drift or 0.0
    path = write_batch(load_settings().batch_dir, rows, args.seed, drift)
    kind = f"drifted batch (strength {drift})" if drift else "batch"
    print(f"Wrote a {kind} of {rows} customers to {path}")


def monitor(args: argparse.Namespace) -> None:
    """Monitor a batch; on drift, alert and retrain here (the orchestrators use their runs)."""
    from .config import load_settings
    from .monitoring import alert_on_drift, monitor_batch

    settings = load_settings()
    result = monitor_batch(settings, args.batch, tags={"orchestrator": "cli"})
    print(result.report.summary)
    print(f"Report: {result.run_url} (Artifacts > drift_report.html)")
    if not result.drift_detected:
        return
    if args.no_retrain:
        alert_on_drift(result, "Retraining is off (--no-retrain).")
        return
    from .pipeline import run_training_pipeline

    alert_on_drift(result, "Retraining started by `make monitor`.")
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
    print(f"Wrote {len(predictions)} predictions ({churn_rate:.1%} churn) to {args.output}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__}", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    command = commands.add_parser("generate-data", help="write the synthetic customer CSV")
    command.add_argument("--rows", type=int, help="default: 5000, or 1000 for a batch")
    command.add_argument("--seed", type=int, help="default: 42, or the batch's number + 1000")
    command.add_argument("--output", help="CSV path (default: DATA_PATH from .env)")
    command.add_argument(
        "--batch", action="store_true", help="write the next batch of new customers to BATCH_DIR"
    )
    command.add_argument(
        "--drift",
        type=float,
        nargs="?",
        const=0.8,
        metavar="STRENGTH",
        help="a batch whose customers have shifted, by 0-1 (default 0.8)",
    )
    command.set_defaults(handler=generate_data)

    command = commands.add_parser("monitor", help="score a batch with the champion, report drift")
    command.add_argument("--batch", type=Path, help="CSV of new customers (default: the newest)")
    command.add_argument("--no-retrain", action="store_true", help="alert on drift, train nothing")
    command.set_defaults(handler=monitor)

    command = commands.add_parser("train", help="train, log to MLflow, promote the best model")
    command.add_argument("--models", nargs="+", help="model names (default: all)")
    command.add_argument("--test-size", type=float, default=0.2)
    command.add_argument("--seed", type=int, default=42)
    command.set_defaults(handler=train)

    command = commands.add_parser("dev", help="start the local servers; Ctrl+C stops them")
    command.add_argument("--only", nargs="+", metavar="SERVICE", help="start only these services")
    command.set_defaults(handler=dev)

    command = commands.add_parser("serve-model", help="serve the champion model over HTTP")
    command.add_argument("--port", type=int, help="default: SERVING_PORT, else MLflow's port + 1")
    command.set_defaults(handler=serve_model)

    command = commands.add_parser("predict", help="batch inference: CSV in, predictions CSV out")
    command.add_argument("--input", type=Path, required=True, help="CSV with the model's columns")
    command.add_argument("--output", type=Path, required=True, help="where to write predictions")
    command.set_defaults(handler=predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_known_failures(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
