"""Hammer ``record_call`` from many threads at once, then check the rollups against audit_log.

Run as a script in a fresh process against a throwaway database (``DATABASE_URL``): a real
SQLite file or a real PostgreSQL database, each thread on its own connection, no test
transaction around it. Prints one JSON line; exit status 0 only if every rollup equals the
GROUP BY of audit_log and every duplicated ``client_request_id`` was recorded once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading

THREADS = int(os.environ.get("RACE_THREADS", "8"))
ROUNDS = int(os.environ.get("RACE_ROUNDS", "6"))
CALLS_PER_ROUND = int(os.environ.get("RACE_CALLS", "5"))


def main() -> int:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ratelimit_project.settings")
    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Sum

    from llm_calls.types import Usage
    from organizations.models import Organization
    from usage import services
    from usage.models import (
        AuditLog,
        OrganizationUsageDaily,
        SessionUsage,
        UsageDaily,
        UserUsageDaily,
    )

    call_command("migrate", verbosity=0)
    services.prices_seed_defaults()
    org = Organization.objects.create(name="race")
    user = User.objects.create_user("racer")
    connection.close()

    barrier = threading.Barrier(THREADS)
    errors: list[str] = []

    def worker(n: int) -> None:
        try:
            for rnd in range(ROUNDS):
                # every round starts on a fresh day: all threads race to create the same rows
                when = dt.datetime(2026, 2, 1 + rnd, 12, tzinfo=dt.UTC)
                barrier.wait(timeout=60)
                for i in range(CALLS_PER_ROUND):
                    for who, where in ((user, org), (None, None)):
                        services.record_call(
                            user=who,
                            organization=where,
                            session_id=f"race-{rnd}",
                            model="claude-sonnet-4-5",
                            priority="query",
                            outcome="success",
                            attempts=1 + (n + i) % 3,
                            final_status=200,
                            error_type="",
                            usage=Usage(
                                input_tokens=10 + n,
                                output_tokens=3 + i,
                                cache_read_input_tokens=100,
                            ),
                            latency_ms=5,
                            queue_wait_ms=1,
                            request_id=f"req-{n}-{rnd}-{i}",
                            occurred_at=when + dt.timedelta(seconds=n * 10 + i),
                        )
                # the same idempotency key from every thread: exactly one row must win
                services.record_call(
                    user=user,
                    organization=org,
                    session_id=f"race-{rnd}",
                    model="claude-sonnet-4-5",
                    priority="query",
                    outcome="success",
                    attempts=1,
                    final_status=200,
                    error_type="",
                    usage=Usage(input_tokens=1000, output_tokens=1),
                    latency_ms=5,
                    queue_wait_ms=1,
                    request_id="dup",
                    client_request_id=f"dup-{rnd}",
                    occurred_at=when,
                )
        except Exception as exc:  # reported below; the check must not hang on a dead thread
            errors.append(f"thread {n}: {type(exc).__name__}: {exc}")
            barrier.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    fields = [
        "requests",
        "retries",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cost_pico_usd",
        "uncached_cost_pico_usd",
        "latency_ms_sum",
    ]
    audit_src = {
        "requests": Sum(1),
        "retries": Sum("attempts") - Sum(1),
        "input_tokens": Sum("input_tokens"),
        "output_tokens": Sum("output_tokens"),
        "cache_read_input_tokens": Sum("cache_read_input_tokens"),
        "cost_pico_usd": Sum("cost_pico_usd"),
        "uncached_cost_pico_usd": Sum("uncached_cost_pico_usd"),
        "latency_ms_sum": Sum("latency_ms"),
    }

    def norm(d: dict) -> dict:
        return {k: int(v or 0) for k, v in d.items()}

    audit = norm(AuditLog.objects.aggregate(**audit_src))
    rollups = {
        name: norm(model.objects.aggregate(**{f: Sum(f) for f in fields}))
        for name, model in (
            ("daily", UsageDaily),
            ("user_daily", UserUsageDaily),
            ("session", SessionUsage),
            ("org", OrganizationUsageDaily),
        )
    }
    expected_rows = THREADS * ROUNDS * CALLS_PER_ROUND * 2 + ROUNDS
    result = {
        "vendor": connection.vendor,
        "errors": errors,
        "audit_rows": AuditLog.objects.count(),
        "expected_rows": expected_rows,
        "duplicate_rows": AuditLog.objects.filter(request_id="dup").count(),
        "daily_rows": UsageDaily.objects.count(),
        "user_daily_rows": UserUsageDaily.objects.count(),
        "session_rows": SessionUsage.objects.count(),
        "org_rows": OrganizationUsageDaily.objects.count(),
        "audit": audit,
        "rollups": rollups,
    }
    ok = (
        not errors
        and result["audit_rows"] == expected_rows
        and result["duplicate_rows"] == ROUNDS
        # one row per (day, user|system) and per (session, user|system): no duplicates from races
        and result["daily_rows"] == 2 * ROUNDS
        and result["user_daily_rows"] == 2 * ROUNDS
        and result["session_rows"] == 2 * ROUNDS
        and result["org_rows"] == 2 * ROUNDS
        and all(r == audit for r in rollups.values())
    )
    result["ok"] = ok
    print(json.dumps(result, sort_keys=True))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
