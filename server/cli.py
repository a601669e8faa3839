"""The ``protege`` console script: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

# Each of these modules exposes ``register(subparsers)``, adding its subcommands with a ``func``.
SUBCOMMAND_MODULES = (
    "server.commands_cli",
    "indexing.cli",
    "security.cli",
    "distill_code.cli",
    "distill_code.pretrain_cli",
    "server.explain_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="protege", description=__doc__)
    parser.add_argument("--log-level", default="WARNING", help="stderr log level (default: WARNING)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        if importlib.util.find_spec(name) is None:
            continue  # a package still being built; its commands appear when its module lands
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # stdout is the protocol for `serve`: logs always go to stderr.
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Bandit's plugin loader reports optional formatters it cannot import (e.g. sarif) as errors.
    logging.getLogger("stevedore.extension").setLevel(logging.CRITICAL)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
