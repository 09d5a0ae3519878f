"""One kind of error for a user's mistake, reported as one line with a non-zero exit status.

A `UserError` says what is wrong with the user's input (a file, a field, a flag, a model pair) and
names it. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

log = logging.getLogger("aligntds")

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake in the user's input: printed as `error: <message>`, exit status 2."""


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a message is emitted (tests and tqdm replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging(quiet: bool = False) -> None:
    """Plain messages on stderr; warnings only on non-zero ranks of a distributed run."""
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.INFO)


def run_cli(work: Callable[[], object]) -> int:
    """Run a script's work: exit status 0, or one line on stderr and status 2 for a `UserError`."""
    try:
        work()
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
