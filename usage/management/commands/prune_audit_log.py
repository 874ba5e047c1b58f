from __future__ import annotations

import re
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from usage import retention

_AGE = re.compile(r"^(\d+)d?$")


def _days(raw: str) -> int:
    match = _AGE.match(raw.strip())
    if not match:
        raise CommandError(f"--older-than takes whole days, e.g. 400d; got {raw!r}.")
    return int(match.group(1))


class Command(BaseCommand):
    help = (
        "Archive audit_log rows older than --older-than days (whole UTC days) to a gzipped CSV, "
        "then delete them, in batches: a batch is deleted only once its archive is on disk. "
        "Rows of unfinished requests and rows still waiting for a price are kept; the rollups "
        "(every dashboard) are not changed. See usage/retention.py and docs/deployment.md."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--older-than",
            required=True,
            help=f"Age in days, e.g. 400d (at least {retention.MIN_RETENTION_DAYS}).",
        )
        where = parser.add_mutually_exclusive_group()
        where.add_argument(
            "--archive", type=Path, help="A new file for the archive, e.g. audit-2025.csv.gz."
        )
        where.add_argument(
            "--no-archive",
            action="store_true",
            help="Delete without keeping a copy (the totals stay in the rollups).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would go; change nothing."
        )
        parser.add_argument("--batch-size", type=int, default=retention.DEFAULT_BATCH_SIZE)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            cutoff = retention.retention_cutoff(older_than_days=_days(options["older_than"]))
        except retention.RetentionRefused as exc:
            raise CommandError(str(exc)) from None
        if options["dry_run"]:
            self._report(retention.audit_log_prune_plan(cutoff=cutoff), verb="would archive")
            return
        archive: Path | None = options["archive"]
        if archive is None and not options["no_archive"]:
            raise CommandError("Say where the rows go: --archive FILE.csv.gz, or --no-archive.")
        try:
            result = retention.audit_log_prune(
                cutoff=cutoff, archive=archive, batch_size=options["batch_size"]
            )
        except retention.RetentionRefused as exc:
            raise CommandError(str(exc)) from None
        self._report(result.plan, verb="found")
        if result.archive is not None:
            where = f"archived to {result.archive} (sha256 {result.archive_sha256}) and deleted"
        else:
            where = "deleted without an archive"
        self.stdout.write(f"{result.deleted} rows {where} in {result.batches} batch(es).")

    def _report(self, plan: retention.PrunePlan, *, verb: str) -> None:
        span = (
            f", {plan.first_occurred_at:%Y-%m-%d} to {plan.last_occurred_at:%Y-%m-%d}"
            if plan.first_occurred_at and plan.last_occurred_at
            else ""
        )
        self.stdout.write(
            f"Before {plan.cutoff:%Y-%m-%d %H:%M} UTC: {verb} {plan.prunable} rows{span}; "
            f"kept {plan.kept_unfinished} of unfinished requests and {plan.kept_unpriced} "
            "waiting for a price."
        )
