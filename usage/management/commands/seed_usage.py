from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from usage import seeding


class Command(BaseCommand):
    help = (
        "Insert realistic synthetic usage history (audit rows + rollups) for demos and the "
        "dashboard benchmark. Seed users are named seed-user-NNNNN (no usable password)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--rows", type=int, required=True, help="Audit rows to insert.")
        parser.add_argument("--users", type=int, default=1000)
        parser.add_argument("--sessions", type=int, default=10_000)
        parser.add_argument("--days", type=int, default=90, help="History length, ending now.")
        parser.add_argument(
            "--seed", type=int, default=1, help="Random seed (same seed, same data)."
        )
        parser.add_argument(
            "--clear", action="store_true", help="Delete all audit rows and rollups first."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = seeding.seed_usage(
                rows=options["rows"],
                users=options["users"],
                sessions=options["sessions"],
                days=options["days"],
                clear=options["clear"],
                seed=options["seed"],
                progress=lambda msg: self.stdout.write(msg),
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"inserted {result.rows:,} rows for {result.users:,} users in "
            f"{result.sessions:,} sessions ({result.seconds_insert}s); rollups "
            f"{result.rollups.daily_rows:,} daily / {result.rollups.user_daily_rows:,} user-daily / "
            f"{result.rollups.session_rows:,} session / "
            f"{result.rollups.organization_rows:,} organization rows ({result.seconds_rollups}s)"
        )
        if result.problems:
            raise CommandError("rollups disagree with audit_log:\n" + "\n".join(result.problems))
        self.stdout.write(self.style.SUCCESS("rollups match audit_log"))
