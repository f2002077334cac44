"""``--smoke`` for every benchmark: its smallest run, so that a test can run
each script in seconds and a benchmark that no longer works fails a test instead of rotting.

Not a benchmark itself (the leading underscore keeps it out of the test's glob). A script builds
its parser as usual and parses with :func:`parse_args`, giving the smallest values of its
options; ``--smoke`` or ``QSIGHT_BENCH_SMOKE=1`` makes those the defaults (options given on the
command line still win). Figures of a smoke run only show that the script works: they are not
measurements.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

ENVIRONMENT_VARIABLE = "QSIGHT_BENCH_SMOKE"


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None,
               **smallest: Any) -> argparse.Namespace:
    """``parser``'s arguments, with ``smallest`` as the defaults in a smoke run."""
    parser.add_argument("--smoke", action="store_true",
                        help=f"the smallest run, to check that the script works (also "
                             f"{ENVIRONMENT_VARIABLE}=1); its figures are not measurements")
    args = parser.parse_args(argv)
    unknown = set(smallest) - set(vars(args))
    if unknown:  # a typo would otherwise leave the full-size default in the smoke run
        raise ValueError(f"smoke values for options the parser lacks: {sorted(unknown)}")
    if args.smoke or os.environ.get(ENVIRONMENT_VARIABLE) == "1":
        parser.set_defaults(**smallest)
        args = parser.parse_args(argv)
        args.smoke = True
    return args
