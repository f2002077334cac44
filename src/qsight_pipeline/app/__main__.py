"""Serve the one-photograph page with Streamlit.

    python -m qsight_pipeline.app --output-dir data/06_models/trained_model [--port 8501]

(``make app`` runs this.) The page loads the model once from ``--output-dir`` and grades each
uploaded photograph with the saved calibration, referral threshold and review threshold.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PAGE = Path(__file__).with_name("page.py")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m qsight_pipeline.app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="data/06_models/trained_model",
                        help="a training run's output folder (with complete_checkpoint.pth)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:<index> | auto")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8501)
    return parser.parse_args(argv)


def streamlit_command(args: argparse.Namespace) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(PAGE),
        "--server.address", args.host, "--server.port", str(args.port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--", "--output-dir", str(Path(args.output_dir).expanduser().resolve()),
        "--device", args.device,
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (Path(args.output_dir).expanduser() / "complete_checkpoint.pth").is_file():
        sys.stderr.write(
            f"{args.output_dir} has no complete_checkpoint.pth: train a model first (`kedro run`) "
            "or pass --output-dir <a training run's output folder>.\n"
        )
        return 2
    command = streamlit_command(args)
    # Become the server (no child process): a signal to this process reaches Streamlit itself.
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
