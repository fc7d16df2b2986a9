"""User-facing errors: one clear line naming the file and the fix, never a deep traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


class PipelineError(Exception):
    """A problem with the user's input (a path, a file, a config value) that they can fix."""


def one_line_errors(fn: F) -> F:
    """Wrap a CLI command: a ``PipelineError`` prints ``error: <message>`` and exits with 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            print("interrupted: finished outputs are kept; re-run to resume", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
