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

    output = args.output or load_settings().data_path
    frame = generate_customer_data(n_customers=args.rows, seed=args.seed)
    path = save_customer_data(frame, output)
    print(f"Wrote {len(frame)} customers ({frame['churned'].mean():.1%} churned) to {path}")


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
    command.add_argument("--rows", type=int, default=5000)
    command.add_argument("--seed", type=int, default=42)
    command.add_argument("--output", help="CSV path (default: DATA_PATH from .env)")
    command.set_defaults(handler=generate_data)

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
