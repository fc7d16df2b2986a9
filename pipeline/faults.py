"""Fault injection for the reliability tests: crash or fill the disk at a named point.

``PIPELINE_FAULT=<site>@<n>`` makes the process kill itself with SIGKILL (what ``kill -9``, the
OOM killer or a power cut do: no clean-up runs) the ``n``-th time it reaches ``site``;
``PIPELINE_FAULT=<site>@<n>:enospc`` raises "No space left on device" there instead. Several
faults are separated by commas. Without the variable (always, outside the tests) ``reached``
costs one dictionary lookup.

Sites: ``atomic.rename`` (a file is written under its temporary name, not yet renamed),
``shard.append`` (half a submission chunk is on disk), ``train.step`` (after an optimiser step),
``evaluate.batch`` and ``submit.batch`` (after a batch is predicted).
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

ENV = "PIPELINE_FAULT"
SITES = ("atomic.rename", "shard.append", "train.step", "evaluate.batch", "submit.batch")

_counts: Counter = Counter()


def _plan() -> dict[str, tuple[int, str]]:
    """``{site: (n, action)}`` from the environment variable."""
    plan = {}
    for item in filter(None, os.environ.get(ENV, "").split(",")):
        site, _, rest = item.partition("@")
        n, _, action = rest.partition(":")
        if site not in SITES or not n.isdigit() or action not in ("", "enospc"):
            raise ValueError(f"{ENV}={item!r}: expected <site>@<n>[:enospc], sites {SITES}")
        plan[site] = (int(n), action or "kill")
    return plan


def reached(site: str) -> None:
    """Count one pass through ``site``; crash here if the plan says so."""
    if ENV not in os.environ:
        return
    _counts[site] += 1
    n, action = _plan().get(site, (0, ""))
    if _counts[site] != n:
        return
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    os.kill(os.getpid(), signal.SIGKILL)
