"""Benchmark scenarios for ``python manage.py loadtest SCENARIO`` (see ../shared/BENCHMARKS.md).

Each scenario is a module here with ``add_arguments(parser)`` and ``run(options) -> dict``.
The ``loadtest`` command calls every scenario's ``add_arguments`` (the scenario is not known
before parsing), so a scenario's own flags must not collide with another's.
It starts what it needs on loopback (its own Redis, the emulator, workers), stops all it
started, and returns the figures; the command prints them as the last line of stdout.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SCENARIOS = (
    "emulator",
    "utilization",
    "fairness",
    "priority",
    "overhead",
    "concurrency",
    "dashboard",
    "caching",
    "eta",
    "faults",
    "proxy",
)


def load(name: str) -> ModuleType:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of: {', '.join(SCENARIOS)}")
    return importlib.import_module(f"ratelimit_project.loadtest.{name}")
