"""The layering DESIGN.md promises (README, "Architecture"), checked on the source itself.

gateway (the Anthropic-compatible endpoint, which nothing imports) → queueing (policy) →
llm_calls (transport) and usage (accounting); below both, organizations
(Organization, Membership), which imports none of the other apps; llm_calls imports neither
usage nor queueing; usage imports no queueing; queueing/models.py does not import the limiter
(which reads it); the emulator imports none of the apps; only queueing calls llm_calls' send
function, which is how "no call bypasses the limiter and tracking" stays true.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("llm_calls", "organizations", "usage", "queueing", "gateway", "ratelimit_project")


def python_files(*dirs: str) -> list[Path]:
    return [p for d in dirs for p in (ROOT / d).rglob("*.py") if "migrations" not in p.parts]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def top_packages(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_modules(path)}


@pytest.mark.parametrize("path", python_files("llm_calls"), ids=lambda p: str(p.relative_to(ROOT)))
def test_transport_imports_neither_usage_nor_queueing(path: Path) -> None:
    assert not top_packages(path) & {"usage", "queueing"}


@pytest.mark.parametrize(
    "path", python_files("organizations"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_organizations_import_none_of_the_apps_above(path: Path) -> None:
    """The bottom of the house: queueing and usage both point to its models."""
    assert not top_packages(path) & {"usage", "queueing", "llm_calls", "ratelimit_project"}


@pytest.mark.parametrize(
    "path",
    python_files("llm_calls", "organizations", "usage", "queueing"),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_nothing_below_the_endpoint_imports_it(path: Path) -> None:
    """The Anthropic-compatible endpoint is the top of the house: only the ASGI entry point
    (``ratelimit_project/asgi.py``) mounts it."""
    assert "gateway" not in top_packages(path)


@pytest.mark.parametrize("path", python_files("usage"), ids=lambda p: str(p.relative_to(ROOT)))
def test_accounting_imports_no_queueing(path: Path) -> None:
    assert "queueing" not in top_packages(path)


def test_queueing_models_do_not_import_the_limiter() -> None:
    """The limiter reads the models; the override receiver is connected in AppConfig.ready()."""
    assert "queueing.limiter" not in imported_modules(ROOT / "queueing" / "models.py")


@pytest.mark.parametrize(
    "path", [p for p in python_files("llm_calls/emulator")], ids=lambda p: str(p.relative_to(ROOT))
)
def test_the_emulator_imports_none_of_the_apps(path: Path) -> None:
    """It stands in for Anthropic, so it may import itself and nothing of ours."""
    outside = {m for m in imported_modules(path) if not m.startswith("llm_calls.emulator")}
    assert not {name.split(".")[0] for name in outside} & set(APPS)


def test_only_the_client_imports_the_sdk() -> None:
    importers = [
        str(p.relative_to(ROOT)) for p in python_files(*APPS) if "anthropic" in top_packages(p)
    ]
    assert importers == ["llm_calls/client.py"]


SEND_FUNCTIONS = frozenset({"send_message", "asend_prepared"})


def uses_send_message(path: Path) -> bool:
    """Whether the file calls the transport's front door, blocking or on an event loop."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name in SEND_FUNCTIONS for a in node.names):
            return True
        if isinstance(node, ast.Attribute) and node.attr in SEND_FUNCTIONS:
            return True
    return False


def test_only_queueing_calls_send_message() -> None:
    """App code outside queueing never calls the transport directly (benchmarks of the transport
    itself, under ratelimit_project/loadtest, may)."""
    callers = [
        str(path.relative_to(ROOT))
        for path in python_files(
            "llm_calls", "organizations", "usage", "gateway", "ratelimit_project"
        )
        if path != ROOT / "llm_calls" / "services.py"
        and not path.is_relative_to(ROOT / "ratelimit_project" / "loadtest")
        and uses_send_message(path)
    ]
    assert callers == []
    assert uses_send_message(ROOT / "queueing" / "services.py")
    assert uses_send_message(ROOT / "queueing" / "engine.py")
