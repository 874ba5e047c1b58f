"""Benchmark ``dashboard``: every usage page and JSON endpoint at ~1,000,000 audit rows.

``python manage.py loadtest dashboard [--opt rows=N] [--opt database_url=URL] [--json PATH]``

Runs against a SEPARATE database, never the project's own: a fresh SQLite file under
``var/bench/`` by default, or ``--opt database_url=postgres://…`` (the database is created if
missing and dropped afterwards if this run created it; ``--opt keep=1`` keeps it). Steps, each
in a subprocess with ``DATABASE_URL`` set: ``migrate``; ``seed_usage --rows N --clear``; then a
timing process that logs in with Django's test Client (DEBUG off) as the busiest seeded user and
as a staff user and requests each view ``--opt requests=30`` times after two warm-up requests.

Options (``--opt key=value``): rows (1000000), users (1000), sessions (10000), days (90),
requests (30), database_url, keep (0/1), reuse (1 = skip migrate+seed when the database
already holds at least ``rows`` audit rows).

Returns ``{"rows", "views": {name: {"p50_ms", "p95_ms"}}, "max_p95_ms", "database", …}``.
Exports (CSV) are not timed: streaming every row is linear in rows by design.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from argparse import ArgumentParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ratelimit_project.redis import stop_embedded_redis

ROOT = Path(__file__).resolve().parents[2]


def add_arguments(parser: ArgumentParser) -> None:
    """All options arrive as ``--opt key=value`` (see the module docstring)."""


def _env(database_url: str, var_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "VAR_DIR": str(var_dir),
        "DJANGO_SETTINGS_MODULE": "ratelimit_project.settings",
        "DJANGO_DEBUG": "0",
        # One machine: the sqlite arm's processes share a file (a PostgreSQL URL ignores it),
        # and every process uses the embedded Redis the first one started.
        "GATEWAY_ALLOW_SQLITE": "1",
        "GATEWAY_ALLOW_EMBEDDED_REDIS": "1",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(40),
        "LOG_LEVEL": "WARNING",
    }


def _manage(args: list[str], env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return proc.stdout


def _postgres_admin_url(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name:
        raise ValueError(f"database_url {url!r} names no database")
    return urlunsplit(parts._replace(path="/postgres")), name


def _postgres_create(url: str) -> bool:
    import psycopg

    admin_url, name = _postgres_admin_url(url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists:
            return False
        conn.execute(f'CREATE DATABASE "{name}"')
        return True


def _postgres_drop(url: str) -> None:
    import psycopg

    admin_url, name = _postgres_admin_url(url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(options: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, str] = options.get("extra") or {}
    rows = int(extra.get("rows", 1_000_000))
    requests = int(extra.get("requests", 30))
    keep = extra.get("keep", "0") == "1"
    reuse = extra.get("reuse", "0") == "1"
    var_dir = Path(os.environ.get("VAR_DIR", ROOT / "var"))
    bench_dir = var_dir / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)

    database_url = extra.get("database_url", "")
    created_pg = False
    if not database_url:
        db_file = bench_dir / "dashboard.sqlite3"
        if not reuse:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{db_file}{suffix}").unlink(missing_ok=True)
        database_url = f"sqlite:///{db_file}"
    elif database_url.startswith(("postgres://", "postgresql://")):
        created_pg = _postgres_create(database_url)
    env = _env(database_url, bench_dir / "var")

    try:
        seed_s = 0.0
        existing = 0
        if reuse:
            _manage(["migrate", "--noinput", "-v", "0"], env, timeout=600)
            existing = int(_measure(env, ["--count"])["rows"])
        if existing < rows:
            started = time.monotonic()
            _manage(["migrate", "--noinput", "-v", "0"], env, timeout=600)
            seed_out = _manage(
                [
                    "seed_usage",
                    "--rows",
                    str(rows),
                    "--users",
                    extra.get("users", "1000"),
                    "--sessions",
                    extra.get("sessions", "10000"),
                    "--days",
                    extra.get("days", "90"),
                    "--clear",
                ],
                env,
                timeout=3600,
            )
            seed_s = time.monotonic() - started
            sys.stderr.write(seed_out)
        result = _measure(env, ["--requests", str(requests)])
    finally:
        if created_pg and not keep:
            _postgres_drop(database_url)
        # The subprocesses ran without REDIS_URL: stop the embedded Redis they started.
        stop_embedded_redis(bench_dir / "var" / "redis")
    result["seed_seconds"] = round(seed_s, 1)
    result["requests_per_view"] = requests
    return result


def _measure(env: dict[str, str], args: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "ratelimit_project.loadtest.dashboard", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dashboard timing failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# --- the timing process (runs with DATABASE_URL pointing at the seeded database) ---------------


def _percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    index = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def _time_views(requests: int) -> dict[str, Any]:
    import django
    from django.test.utils import setup_test_environment

    django.setup()
    setup_test_environment(debug=False)
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.db.models import Count
    from django.test import Client

    from usage.models import AuditLog, SessionUsage, UsageDaily

    rows = AuditLog.objects.count()
    user_model = get_user_model()
    busiest = (
        UsageDaily.objects.exclude(user=None)
        .values("user_id")
        .annotate(n=Count("id"))
        .order_by("-n")
        .first()
    )
    if busiest is None:
        raise SystemExit("no usage rows: seed first")
    user = user_model._default_manager.get(pk=busiest["user_id"])
    big_session = (
        SessionUsage.objects.filter(user=user)
        .order_by("-requests")
        .values_list("session_id", "requests")
    ).first()
    assert big_session is not None
    session_id, session_calls = big_session
    staff, _ = user_model._default_manager.get_or_create(
        username="bench-staff", defaults={"is_staff": True, "password": "!"}
    )
    me, boss = Client(), Client()
    me.force_login(user)
    boss.force_login(staff)
    views: list[tuple[str, Client, str]] = [
        ("my_usage_90d", me, "/usage/?days=90"),
        ("my_usage_30d", me, "/usage/"),
        ("my_session", me, f"/usage/sessions/{session_id}/"),
        ("my_caching_90d", me, "/usage/caching/?days=90"),
        ("api_summary_90d", me, "/usage/api/summary.json?days=90"),
        ("api_daily_90d", me, "/usage/api/daily.json?days=90"),
        ("api_models_90d", me, "/usage/api/models.json?days=90"),
        ("api_sessions_90d", me, "/usage/api/sessions.json?days=90"),
        ("api_session_calls", me, f"/usage/api/sessions/{session_id}/calls.json"),
        ("staff_users_90d", boss, "/usage/users/?days=90"),
        ("staff_users_90d_by_tokens", boss, "/usage/users/?days=90&sort=tokens"),
        ("staff_users_90d_page_5", boss, "/usage/users/?days=90&page=5"),
        ("staff_user_drilldown_90d", boss, f"/usage/users/{user.pk}/?days=90"),
        ("staff_user_session", boss, f"/usage/users/{user.pk}/sessions/{session_id}/"),
        ("staff_orgs_90d", boss, "/usage/orgs/?days=90"),
        ("staff_caching_all_90d", boss, "/usage/caching/?days=90&user=all"),
        ("staff_api_users_90d", boss, "/usage/api/users.json?days=90"),
        ("staff_api_orgs_90d", boss, "/usage/api/orgs.json?days=90"),
        ("staff_api_summary_all_90d", boss, "/usage/api/summary.json?days=90&user=all"),
        ("staff_api_daily_all_90d", boss, "/usage/api/daily.json?days=90&user=all"),
        ("metrics", boss, "/metrics"),
    ]
    results: dict[str, dict[str, float]] = {}
    for name, client, url in views:
        samples = []
        for i in range(requests + 2):
            started = time.perf_counter()
            response = client.get(url)
            body = response.content
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200:
                raise SystemExit(f"{name}: {url} answered {response.status_code}: {body[:500]!r}")
            if i >= 2:  # two warm-up requests
                samples.append(elapsed)
        results[name] = {
            "p50_ms": round(statistics.median(samples), 1),
            "p95_ms": round(_percentile(samples, 95), 1),
        }
    return {
        "rows": rows,
        "database": connection.vendor,
        "views": results,
        "max_p95_ms": max(v["p95_ms"] for v in results.values()),
        "timed_user_daily_rows": busiest["n"],
        "timed_session_calls": session_calls,
        "rollup_rows": {
            "daily": UsageDaily.objects.count(),
            "sessions": SessionUsage.objects.count(),
        },
    }


def _main(argv: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ratelimit_project.settings")
    if "--count" in argv:
        import django

        django.setup()
        from usage.models import AuditLog

        print(json.dumps({"rows": AuditLog.objects.count()}))
        return
    requests = int(argv[argv.index("--requests") + 1]) if "--requests" in argv else 30
    print(json.dumps(_time_views(requests)))


if __name__ == "__main__":
    _main(sys.argv[1:])
