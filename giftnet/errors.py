"""The user's mistakes, each with its own type.

Every command-line entry point catches `UserError` (and only it): it prints the message, which
names the file or argument at fault, and exits with status 2. Anything else is a bug in our code
and is left to raise with its traceback (exit 1). This module imports nothing from the project,
so the data pipeline and the kernels can raise these too.
"""

from __future__ import annotations

import sys
from collections.abc import Callable


class UserError(Exception):
    """Something the user gave us cannot work; the message names the file or the argument."""

    exit_code = 2


class UsageError(UserError):
    """A command-line argument or config field that is wrong or cannot work here."""


class DataError(UserError):
    """A problem with the data on disk (image, mask, list file); the message names the file."""


class WeightsError(UserError):
    """A weights or checkpoint file that cannot be used; the message names the file."""


def run_cli(prog: str, main: Callable[[], int]) -> int:
    """Run a CLI body: a UserError becomes `prog: error: message` and exit status 2.

    Nothing else is caught, so a bug shows its traceback.
    """
    try:
        return main()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code


class ConfigError(UsageError, ValueError):
    """A config field with a value outside its domain (a ValueError too, for Python callers)."""
