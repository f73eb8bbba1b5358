"""Argument types both command lines share, so that a bad number is an argparse error naming the flag."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

__all__ = ["MAX_BUDGETS", "OneLineParser", "at_least", "budget_list", "command_parser", "finite_float", "fraction",
           "non_negative_float", "non_negative_int", "positive_float", "positive_int", "resolution_list",
           "width_multiplier"]

# Each budget is a search (and on a device, measurements): a list longer than this is a mistake, not a plan.
MAX_BUDGETS = 64


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a number above 0")
    return value


# Channel counts are the base ones times the width: far past the released widths they stop meaning a network.
MAX_WIDTH = 10.0


def width_multiplier(text: str) -> float:
    """A supernet width: above 0 and at most :data:`MAX_WIDTH`."""
    value = finite_float(text)
    if not 0 < value <= MAX_WIDTH:
        raise argparse.ArgumentTypeError(f"{text} must lie above 0 and at most {MAX_WIDTH:g} (the released supernets "
                                         "are 1.0 and 1.2 for MobileNetV3, 1.3 for ProxylessNAS)")
    return value


def non_negative_float(text: str) -> float:
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a number of 0 or more")
    return value


def fraction(text: str) -> float:
    """A share from 0 up to, not including, 1 (a slack, a guard, a dropout rate, a momentum)."""
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction from 0 up to 1 (e.g. 0.02 for 2%)")
    return value


def at_least(lowest: int):
    """A whole-number type of at least ``lowest`` (argparse names the flag in its error)."""
    def parse(text: str) -> int:
        value = _int(text)
        if value < lowest:
            raise argparse.ArgumentTypeError(f"{value} must be {lowest} or more")
        return value

    parse.__name__ = f"at_least_{lowest}"
    return parse


positive_int = at_least(1)
non_negative_int = at_least(0)


def budget_list(text: str) -> list[float]:
    """Comma-separated budgets: finite, above 0, at most :data:`MAX_BUDGETS` of them."""
    values = [positive_float(v) for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one budget, e.g. 8,10,12")
    if len(values) > MAX_BUDGETS:
        raise argparse.ArgumentTypeError(f"{len(values)} budgets: give at most {MAX_BUDGETS} (each is a search)")
    return values


def resolution_list(text: str) -> tuple[int, ...]:
    """Comma-separated input resolutions, sorted and distinct: at least 32 each, since the network strides by 32."""
    try:
        values = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of resolutions, e.g. 32,40") from None
    if not values or values[0] < 32:
        raise argparse.ArgumentTypeError(f"{text!r}: give resolutions of at least 32, e.g. 32,40 (the network strides "
                                         f"by 32)")
    return values


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
