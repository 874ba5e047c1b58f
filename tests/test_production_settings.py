"""Production settings: refused when they would split the deployment, and the README's list
passes ``manage.py check --deploy`` with no issue at all.

Each run is a fresh ``manage.py`` process with a clean environment (only what is listed here),
so nothing of the developer's or CI's environment leaks in. ``check`` connects to neither Redis
nor the database: the URLs below need not answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks
from django.core.management import call_command

from llm_calls import checks as llm_checks
from queueing import checks as queueing_checks

ROOT = Path(__file__).resolve().parent.parent

# The README's "Production settings", with placeholder values.
PRODUCTION_ENV = {
    "DJANGO_DEBUG": "0",
    "SECRET_KEY": "k3Yq-8c1Zf0pW9sLmX2vT7rJ4nB6dH5gE0aU1iO3yR8tC2wQ9xV7zS4kN6mP1",
    "ALLOWED_HOSTS": "gateway.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://gateway.example.com",
    "REDIS_URL": "redis://redis.internal.example:6379/0",
    "DATABASE_URL": "postgres://gateway:secret@db.internal.example:5432/gateway",
    "ANTHROPIC_API_KEY": "sk-ant-api03-placeholder",
    "SECURE_SSL_REDIRECT": "1",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
    "SESSION_COOKIE_SECURE": "1",
    "CSRF_COOKIE_SECURE": "1",
}


def manage(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "VAR_DIR": str(tmp_path), **env}
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_documented_production_environment_passes_check_deploy(tmp_path: Path) -> None:
    run = manage(tmp_path, PRODUCTION_ENV, "check", "--deploy", "--fail-level", "WARNING")
    assert run.returncode == 0, run.stderr
    assert "System check identified no issues" in run.stdout


def test_a_single_machine_install_passes_with_both_opt_ins(tmp_path: Path) -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env |= {"GATEWAY_ALLOW_EMBEDDED_REDIS": "1", "GATEWAY_ALLOW_SQLITE": "1"}
    run = manage(tmp_path, env, "check", "--deploy", "--fail-level", "WARNING")
    assert run.returncode == 0, run.stderr
    assert not (tmp_path / "redis" / "redis.sock").exists()  # check started no Redis


def test_debug_off_without_redis_url_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "REDIS_URL"}
    run = manage(tmp_path, env, "check")
    assert run.returncode != 0
    assert "DJANGO_DEBUG is off: refusing to start. REDIS_URL is not set" in run.stderr
    assert "GATEWAY_ALLOW_EMBEDDED_REDIS=1" in run.stderr
    assert "DATABASE_URL" not in run.stderr


def test_debug_off_on_sqlite_refuses_to_start(tmp_path: Path) -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DATABASE_URL"}
    run = manage(tmp_path, env, "check")
    assert run.returncode != 0
    assert "DATABASE_URL is not set, so this machine would use a SQLite file" in run.stderr
    assert "GATEWAY_ALLOW_SQLITE=1" in run.stderr

    explicit = manage(tmp_path, env | {"DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3"}, "check")
    assert explicit.returncode != 0
    assert "DATABASE_URL names a SQLite file" in explicit.stderr


def test_a_setting_that_does_not_parse_fails_check_with_its_message(tmp_path: Path) -> None:
    run = manage(tmp_path, {"GATEWAY_SCHEDULER_MODE": "random"}, "check")
    assert run.returncode != 0
    assert "(gateway.E001) GATEWAY_SCHEDULER_MODE must be one of fair, fifo; got 'random'." in (
        run.stderr
    )


# --- the checks themselves, in this process -------------------------------------------------


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [m.id or "" for m in messages]


def test_queueing_settings_are_parsed_by_their_accessors(settings) -> None:
    assert queueing_checks.check_queueing_settings() == []
    settings.GATEWAY_PRIORITY_CLASSES = [("interactive", 0.7), ("bulk", 0.6)]
    settings.GATEWAY_DISPATCH_BACKLOG = "lots"
    found = queueing_checks.check_queueing_settings()
    assert ids(found) == ["gateway.E001", "gateway.E001"]
    assert "the min_shares add up to 1.30" in found[0].msg
    assert found[1].obj == "GATEWAY_DISPATCH_BACKLOG" and "'lots'" in found[1].msg


def test_shared_state_deploy_checks_respect_the_opt_ins(
    settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = "django.db.backends.sqlite3"
    monkeypatch.setattr(queueing_checks, "_database_engine", lambda: engine)
    settings.EMBEDDED_REDIS = True
    settings.GATEWAY_ALLOW_EMBEDDED_REDIS = False
    settings.GATEWAY_ALLOW_SQLITE = False
    assert ids(queueing_checks.check_shared_state()) == ["gateway.W001", "gateway.W002"]
    settings.GATEWAY_ALLOW_EMBEDDED_REDIS = True
    settings.GATEWAY_ALLOW_SQLITE = True
    assert queueing_checks.check_shared_state() == []
    settings.EMBEDDED_REDIS = False
    settings.GATEWAY_ALLOW_SQLITE = False
    engine = "django.db.backends.postgresql"
    assert queueing_checks.check_shared_state() == []


@pytest.mark.parametrize(
    ("base_url", "key", "regular", "deploy"),
    [
        ("", "", [], ["gateway.E003"]),
        ("", "sk-ant-api03-x", [], []),
        ("", "not-a-key", [], ["gateway.W004"]),
        ("http://127.0.0.1:8765", "", [], []),
        ("http://proxy.example.com", "sk-ant-api03-x", [], ["gateway.W003"]),
        ("https://proxy.example.com", "sk-ant-api03-x", [], []),
        ("api.anthropic.com", "sk-ant-api03-x", ["gateway.E002"], []),
    ],
)
def test_anthropic_endpoint_checks(
    settings, base_url: str, key: str, regular: list[str], deploy: list[str]
) -> None:
    settings.ANTHROPIC_BASE_URL = base_url
    settings.ANTHROPIC_API_KEY = key
    assert ids(llm_checks.check_anthropic_settings()) == regular
    found = llm_checks.check_anthropic_endpoint()
    assert ids(found) == deploy
    assert all(key not in m.msg for m in found if key)  # the key is never shown


def test_anthropic_numbers_are_checked(settings) -> None:
    settings.ANTHROPIC_BASE_URL = "http://127.0.0.1:8765"
    settings.ANTHROPIC_TIMEOUT_S = 0
    settings.LLM_RETRY_MAX_RETRIES = "five"
    found = llm_checks.check_anthropic_settings()
    assert ids(found) == ["gateway.E001", "gateway.E001"]
    assert "ANTHROPIC_TIMEOUT_S must be > 0" in found[0].msg
    assert found[1].obj == "LLM_RETRY_MAX_RETRIES"


def test_the_test_settings_pass_the_gateway_checks() -> None:
    call_command("check", tags=["gateway"], fail_level="ERROR")
