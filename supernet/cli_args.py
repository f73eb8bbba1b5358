"""Argument types both command lines share, so that a bad number is an argparse error naming the flag."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

__all__ = ["OneLineParser", "command_parser", "finite_float", "non_negative_int", "positive_int"]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be 1 or more")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, like every other error of the project's commands."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def command_parser(prog: str, doc: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A parser with subcommands, its help from a module docstring (first paragraph; the rest as epilog), and
    ``--debug`` (which :func:`~supernet.errors.run_command` reads)."""
    summary, _, rest = doc.partition("\n\n")
    parser = OneLineParser(prog=prog, description=summary, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=rest)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser, parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
