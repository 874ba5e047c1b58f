"""audit_log retention: archive old audit rows to a file, then delete them, in batches.

``audit_log`` grows by one row per billed response, forever; the dashboards do not need it to
(they read the rollups). ``audit_log_prune`` moves rows older than a cutoff out of the database:

- **Archive first, then delete, per batch, in one transaction.** A batch's rows are locked,
  written to the archive as one gzip member and fsynced, and only then deleted — with the
  ``AuditLogPrune`` record of the run updated in the same transaction. If writing, syncing or
  the delete fails, the transaction rolls back (nothing of the batch is deleted) and the file is
  cut back to where the batch began, so the archive holds exactly the rows that are gone. A
  process killed between the fsync and the commit leaves that one batch both in the archive and
  in the table; the ``id`` column tells the copies apart, and the next run archives it again.
- **Rows that must stay are never touched:** rows of a request that has not finished (its
  worker may still record, settle or recover from them; every terminal transition sets
  ``finished_at``, ``queueing.services``), rows still waiting for a price (``price_missing``:
  loading the price re-prices them and their rollups), and anything newer than
  ``MIN_RETENTION_DAYS`` — the current month's key budgets, the quota pace and the
  reconciliation of recent days read audit rows themselves.
- **The rollups are left alone,** so every dashboard total, chart and session row stays what it
  was. The deleted rows' counters are added to the run's ``AuditLogPrune`` record, which
  ``services.rollups_check`` counts in; ``services.rollups_rebuild`` refuses to run once rows
  were pruned (it would rebuild the pruned days from nothing).

The archive is a faithful copy for re-loading or auditing (every column, ``None`` as an empty
field, datetimes in ISO 8601 UTC): not escaped for spreadsheets, unlike the CSV exports.
Concatenated gzip members read as one file (``zcat``, ``gzip.open``), one header line first.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gzip
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from django.db import transaction
from django.db.models import Max, Min, Q, QuerySet
from django.utils import timezone

from usage.models import AuditLog, AuditLogPrune, UsageCounters

# Below this the pruned rows could still be read as rows: a gateway key's monthly budget and the
# quota pace (queueing.quotas, usage.selectors.audit_spend_since) and the reconciliation of
# recent days (usage.reconcile). 35 days is always before the start of the current month.
MIN_RETENTION_DAYS = 35
DEFAULT_BATCH_SIZE = 1000
ARCHIVE_COLUMNS: tuple[str, ...] = tuple(f.attname for f in AuditLog._meta.concrete_fields)


class RetentionRefused(ValueError):
    """The retention cannot run as asked (the message says why); nothing was changed."""


@dataclass(frozen=True)
class PrunePlan:
    """What a prune with this cutoff would do, counted now (a dry run)."""

    cutoff: dt.datetime
    prunable: int
    kept_unfinished: int  # older than the cutoff, but their request has not finished
    kept_unpriced: int  # older than the cutoff, but still waiting for a price
    first_occurred_at: dt.datetime | None
    last_occurred_at: dt.datetime | None


@dataclass(frozen=True)
class PruneResult:
    plan: PrunePlan
    deleted: int
    batches: int
    archive: Path | None
    archive_sha256: str
    prune_id: int | None  # the AuditLogPrune record; None when there was nothing to delete


def retention_cutoff(*, older_than_days: int, now: dt.datetime | None = None) -> dt.datetime:
    """The start (00:00 UTC) of the day ``older_than_days`` before today: whole UTC days are
    pruned, so a day's audit rows are either all kept or all archived."""
    if older_than_days < MIN_RETENTION_DAYS:
        raise RetentionRefused(
            f"Audit rows are kept at least {MIN_RETENTION_DAYS} days (asked: {older_than_days}): "
            "the current month's key budgets, the quota pace and the reconciliation of recent "
            "days read them."
        )
    today = (now or timezone.now()).astimezone(dt.UTC).date()
    return dt.datetime.combine(today - dt.timedelta(days=older_than_days), dt.time.min, dt.UTC)


def _older(cutoff: dt.datetime) -> QuerySet[AuditLog]:
    return AuditLog.objects.filter(occurred_at__lt=cutoff)


# A row's request, when it has one, must have finished (usage imports no queueing: the
# request's finished_at says it, as every terminal transition sets it).
_REQUEST_FINISHED = Q(llm_request__isnull=True) | Q(llm_request__finished_at__isnull=False)


def prunable_rows(*, cutoff: dt.datetime) -> QuerySet[AuditLog]:
    """The audit rows a prune with this cutoff archives and deletes."""
    return _older(cutoff).filter(_REQUEST_FINISHED, price_missing=False)


def audit_log_prune_plan(*, cutoff: dt.datetime) -> PrunePlan:
    older = _older(cutoff)
    prunable = prunable_rows(cutoff=cutoff)
    span = prunable.aggregate(first=Min("occurred_at"), last=Max("occurred_at"))
    return PrunePlan(
        cutoff=cutoff,
        prunable=prunable.count(),
        kept_unfinished=older.exclude(_REQUEST_FINISHED).count(),
        kept_unpriced=older.filter(_REQUEST_FINISHED, price_missing=True).count(),
        first_occurred_at=span["first"],
        last_occurred_at=span["last"],
    )


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


class ArchiveFile:
    """The archive being written: a new file (never an existing one, so no earlier archive is
    overwritten), one gzip member per batch, each fsynced before its rows may be deleted.
    ``rollback`` cuts the file back to the end of the last batch whose delete committed."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        # "x": refuse to clobber an archive of an earlier run.
        self._file: BinaryIO = open(self.path, "xb")  # noqa: SIM115 - closed by close()
        self._committed = 0  # bytes of batches whose rows are deleted

    def append(self, rows: list[tuple[Any, ...]]) -> None:
        """Write ``rows`` as one gzip member (the CSV header first in the file's first) and make
        it durable."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        if self._committed == 0:
            writer.writerow(ARCHIVE_COLUMNS)
        writer.writerows([_cell(v) for v in row] for row in rows)
        self._file.write(gzip.compress(text.getvalue().encode(), mtime=0))
        self.sync()

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def committed(self) -> None:
        """The rows written so far are deleted: keep them."""
        self._committed = self._file.tell()

    def rollback(self) -> None:
        """Drop what was written since the last ``committed``: those rows are still in the
        table (their transaction rolled back)."""
        self._file.seek(self._committed)
        self._file.truncate(self._committed)
        with contextlib.suppress(OSError):
            self.sync()

    def close(self) -> None:
        self._file.close()
        # The file's directory entry must be durable too, or a crash could lose the whole file.
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _counter_sums(rows: QuerySet[AuditLog]) -> dict[str, int]:
    sums = rows.aggregate(**{"agg_" + c.name: c.total() for c in UsageCounters.COUNTERS})
    return {name: int(sums["agg_" + name] or 0) for name in UsageCounters.COUNTER_FIELDS}


def _added(totals: dict[str, Any], more: dict[str, int]) -> dict[str, int]:
    return {name: int(totals.get(name, 0)) + more[name] for name in UsageCounters.COUNTER_FIELDS}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def audit_log_prune(
    *, cutoff: dt.datetime, archive: Path | None, batch_size: int = DEFAULT_BATCH_SIZE
) -> PruneResult:
    """Archive (unless ``archive`` is None: the rows are then simply deleted) and delete every
    prunable audit row older than ``cutoff``, ``batch_size`` rows per transaction.

    Raises ``RetentionRefused`` before changing anything when the cutoff is newer than
    ``MIN_RETENTION_DAYS`` or the archive cannot be created (it exists, or its directory does
    not). An error mid-run leaves the batches before it archived and deleted (and recorded), and
    everything after it in place: run it again with a new archive file.
    """
    if cutoff > retention_cutoff(older_than_days=MIN_RETENTION_DAYS):
        raise RetentionRefused(
            f"The cutoff {cutoff.isoformat()} is less than {MIN_RETENTION_DAYS} days ago."
        )
    if batch_size < 1:
        raise RetentionRefused(f"batch_size must be at least 1, got {batch_size}.")
    plan = audit_log_prune_plan(cutoff=cutoff)
    if plan.prunable == 0:
        return PruneResult(plan, 0, 0, None, "", None)
    writer: ArchiveFile | None = None
    if archive is not None:
        try:
            writer = ArchiveFile(archive)
        except FileExistsError:
            raise RetentionRefused(f"{archive} exists: give the archive a new file name.") from None
        except OSError as exc:
            raise RetentionRefused(f"Cannot create the archive {archive}: {exc}") from None
    record = AuditLogPrune.objects.create(
        started_at=timezone.now(),
        cutoff=cutoff,
        archive_path=str(Path(archive).resolve()) if archive is not None else "",
    )
    deleted = batches = 0
    try:
        while True:
            n = _prune_batch(record_id=record.pk, cutoff=cutoff, writer=writer, size=batch_size)
            if n == 0:
                break
            deleted += n
            batches += 1
    finally:
        if writer is not None:
            writer.close()
    sha = _sha256(writer.path) if writer is not None else ""
    AuditLogPrune.objects.filter(pk=record.pk).update(
        finished_at=timezone.now(), archive_sha256=sha
    )
    return PruneResult(plan, deleted, batches, writer.path if writer else None, sha, record.pk)


def _prune_batch(
    *, record_id: int, cutoff: dt.datetime, writer: ArchiveFile | None, size: int
) -> int:
    """One batch: lock it, archive it durably, delete it and count it in the run's record —
    all or nothing. Returns how many rows it deleted (0: nothing left)."""
    try:
        with transaction.atomic():
            # Locked (PostgreSQL; SQLite's IMMEDIATE transaction locks the database), so a
            # concurrent re-pricing cannot change a row between its copy and its delete. Only
            # the audit rows: their request is on the nullable side of an outer join, and a
            # finished request does not become unfinished.
            ids = list(
                prunable_rows(cutoff=cutoff)
                .select_for_update(of=("self",))
                .order_by("id")
                .values_list("id", flat=True)[:size]
            )
            if not ids:
                return 0
            batch = AuditLog.objects.filter(pk__in=ids)
            if writer is not None:
                writer.append(list(batch.order_by("id").values_list(*ARCHIVE_COLUMNS)))
            sums = _counter_sums(batch)
            session_sums = _counter_sums(batch.exclude(session_id=""))
            span = batch.aggregate(first=Min("occurred_at"), last=Max("occurred_at"))
            record = AuditLogPrune.objects.select_for_update().get(pk=record_id)
            deleted, _ = batch.delete()
            if deleted != len(ids):  # nothing cascades from audit rows: this would be a bug
                raise RuntimeError(f"deleted {deleted} rows for a batch of {len(ids)}")
            record.rows += deleted
            record.totals = _added(record.totals, sums)
            record.session_totals = _added(record.session_totals, session_sums)
            firsts = [t for t in (record.first_occurred_at, span["first"]) if t is not None]
            lasts = [t for t in (record.last_occurred_at, span["last"]) if t is not None]
            record.first_occurred_at = min(firsts)
            record.last_occurred_at = max(lasts)
            record.save()
    except BaseException:
        if writer is not None:
            writer.rollback()  # the batch is still in the table: not in the archive either
        raise
    if writer is not None:
        writer.committed()
    return deleted
