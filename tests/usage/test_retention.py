"""audit_log retention (issue 17): ``prune_audit_log`` archives old audit rows, then deletes them.

What an operator relies on, each checked on a real database and a real archive file:
exactly the old, finished, priced rows go (and nothing else); the archive holds every one of
them, value for value, and nothing that is still in the table — also when writing it fails
mid-run; the dashboards show the same totals afterwards; the rollups still balance.
"""

from __future__ import annotations

import csv
import datetime as dt
import errno
import gzip
import hashlib
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from llm_calls.types import Usage
from queueing.models import LLMRequest
from tests.usage.factories import make_org, make_price, make_user, record
from usage import retention, selectors, services
from usage.forms import DateRange
from usage.models import AuditLog, AuditLogPrune

pytestmark = pytest.mark.django_db

OLDER_THAN = 400
TRICKY_SESSION = 'contract, "clause 7"\nline two'


def _days_ago(days: int, hour: int = 12) -> dt.datetime:
    today = timezone.now().astimezone(dt.UTC).date()
    return dt.datetime.combine(today - dt.timedelta(days=days), dt.time(hour), dt.UTC)


def _request(user: Any, *, finished: bool) -> LLMRequest:
    return LLMRequest.objects.create(
        user=user,
        session_id="with-request",
        model="claude-sonnet-4-5",
        params={"messages": [{"role": "user", "content": "hi"}]},
        max_tokens=10,
        status=LLMRequest.Status.SUCCEEDED if finished else LLMRequest.Status.RUNNING,
        finished_at=timezone.now() if finished else None,
    )


class World:
    """Audit rows either side of the cutoff, and the old ones that must stay anyway."""

    def __init__(self) -> None:
        self.cutoff = retention.retention_cutoff(older_than_days=OLDER_THAN)
        self.org = make_org("Acme")
        self.alice = make_user("alice", org=self.org)
        self.bob = make_user("bob")
        self.staff = make_user("staff", staff=True)
        # The shipped sheet prices this model from 2026 on; the old calls need a price too (an
        # unpriced row is kept: its price may still come).
        make_price("claude-sonnet-4-5", "2020-01-01", "3", "15", effective_until="2025-12-31")
        services.price_cache_clear()
        old, older = OLDER_THAN + 100, OLDER_THAN + 50

        def rec(user: Any, when: dt.datetime, **kw: Any) -> int:
            org = self.org if user == self.alice else None
            return record(user=user, org=org, occurred_at=when, **kw).pk

        self.pruned = [
            rec(self.alice, _days_ago(old), session_id="old-s", usage=Usage(1200, 300)),
            rec(self.alice, _days_ago(old, 13), session_id="old-s", usage=Usage(80, 20)),
            rec(self.alice, _days_ago(old, 14), session_id=TRICKY_SESSION, attempts=3),
            rec(self.bob, _days_ago(older), session_id="", usage=Usage(500, 50)),
            rec(self.bob, _days_ago(older, 9), session_id="", outcome=AuditLog.Outcome.FAILED),
            rec(
                self.alice,
                _days_ago(older),
                session_id="with-request",
                llm_request=_request(self.alice, finished=True),
            ),
            rec(self.bob, self.cutoff - dt.timedelta(microseconds=1), session_id="edge"),
        ]
        self.unfinished = rec(
            self.alice,
            _days_ago(old),
            session_id="with-request",
            llm_request=_request(self.alice, finished=False),
        )
        self.unpriced = rec(self.bob, _days_ago(old), model="claude-unpriced-9")
        self.kept = [
            self.unfinished,
            self.unpriced,
            rec(self.bob, self.cutoff, session_id="edge"),  # not older than the cutoff
            rec(self.alice, _days_ago(10), session_id="old-s", usage=Usage(40, 4)),
            rec(self.alice, timezone.now(), session_id="today"),
        ]
        # Copies of the pruned rows as the database holds them now, to compare the archive with.
        self.pruned_values = {
            row["id"]: row
            for row in AuditLog.objects.filter(pk__in=self.pruned).values(
                *retention.ARCHIVE_COLUMNS
            )
        }


@pytest.fixture
def world() -> World:
    return World()


def _read_archive(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", newline="") as f:
        return list(csv.DictReader(f))


def _as_archived(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, bool):
        return str(int(value))
    return str(value)


def _dashboards(world: World) -> dict[str, Any]:
    """What the usage pages' JSON shows alice, and staff, over all of it."""
    today = timezone.now().astimezone(dt.UTC).date()
    span = f"start={today - dt.timedelta(days=OLDER_THAN + 200)}&end={today}"
    shown: dict[str, Any] = {}
    for who, paths in (
        (world.alice, ("summary", "daily", "models", "sessions")),
        (world.staff, ("users", "orgs")),
    ):
        client = Client()
        client.force_login(who)
        for name in paths:
            extra = f"&user={world.alice.pk}" if name == "sessions" else ""
            response = client.get(f"/usage/api/{name}.json?{span}{extra}")
            assert response.status_code == 200, response.content
            shown[f"{who.username}:{name}"] = response.json()
    date_range = DateRange(start=today - dt.timedelta(days=OLDER_THAN + 200), end=today)
    shown["org summary"] = selectors.usage_summary(
        user_id=None, organization_id=world.org.pk, date_range=date_range
    ).as_dict()
    shown["metrics by model"] = [m.as_dict() for m in selectors.lifetime_totals_by_model()]
    session = selectors.session_for_user(user_id=world.alice.pk, session_id="old-s")
    assert session is not None
    shown["old session"] = session.as_dict()
    return shown


def test_prune_archives_then_deletes_exactly_the_old_finished_rows(
    world: World, tmp_path: Path
) -> None:
    before = _dashboards(world)
    assert before["alice:summary"]["totals"]["requests"] > 0
    assert services.rollups_check() == []
    archive = tmp_path / "audit-old.csv.gz"

    result = retention.audit_log_prune(cutoff=world.cutoff, archive=archive, batch_size=2)

    # Exactly the old rows of finished (or no) requests went; everything else is still there.
    assert result.deleted == len(world.pruned)
    assert result.batches == 4  # 7 rows, 2 per transaction
    assert not AuditLog.objects.filter(pk__in=world.pruned).exists()
    assert set(AuditLog.objects.values_list("pk", flat=True)) == set(world.kept)
    assert result.plan.kept_unfinished == 1 and result.plan.kept_unpriced == 1

    # The archive holds each of them once, every column as it was (one header, four members).
    rows = _read_archive(archive)
    assert sorted(int(r["id"]) for r in rows) == sorted(world.pruned)
    assert list(rows[0]) == list(retention.ARCHIVE_COLUMNS)
    for row in rows:
        original = world.pruned_values[int(row["id"])]
        assert row == {name: _as_archived(original[name]) for name in retention.ARCHIVE_COLUMNS}
    assert any(r["session_id"] == TRICKY_SESSION for r in rows)

    record_ = AuditLogPrune.objects.get()
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert record_.archive_sha256 == result.archive_sha256 == digest
    assert record_.archive_path == str(archive.resolve())
    assert record_.rows == len(world.pruned) and record_.finished_at is not None
    assert record_.first_occurred_at == min(v["occurred_at"] for v in world.pruned_values.values())
    assert record_.last_occurred_at == world.cutoff - dt.timedelta(microseconds=1)

    # The dashboards show what they showed; the rollups still balance with what was pruned.
    assert _dashboards(world) == before
    assert services.rollups_check() == []
    # A rebuild from audit_log would erase the pruned days: refused.
    with pytest.raises(services.RollupsRebuildRefused):
        services.rollups_rebuild()
    assert _dashboards(world) == before

    # Nothing left to prune: no second archive, no second record.
    again = retention.audit_log_prune(cutoff=world.cutoff, archive=tmp_path / "again.csv.gz")
    assert again.deleted == 0 and not (tmp_path / "again.csv.gz").exists()
    assert AuditLogPrune.objects.count() == 1


def test_rollups_check_still_catches_a_real_difference_after_a_prune(
    world: World, tmp_path: Path
) -> None:
    retention.audit_log_prune(cutoff=world.cutoff, archive=tmp_path / "a.csv.gz")
    AuditLog.objects.filter(pk=world.kept[-1]).delete()  # behind the rollups' back
    assert services.rollups_check() != []


def test_a_batch_whose_archive_write_fails_is_not_deleted(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The disk fills up while the second batch is being made durable (its bytes are written,
    # the fsync fails): that batch must stay in the table and leave nothing in the archive.
    calls = {"n": 0}
    real_sync = retention.ArchiveFile.sync

    def sync(self: retention.ArchiveFile) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_sync(self)

    monkeypatch.setattr(retention.ArchiveFile, "sync", sync)
    first = tmp_path / "first.csv.gz"
    with pytest.raises(OSError, match="No space left"):
        retention.audit_log_prune(cutoff=world.cutoff, archive=first, batch_size=3)

    archived = {int(r["id"]) for r in _read_archive(first)}
    gone = set(world.pruned) - set(AuditLog.objects.values_list("pk", flat=True))
    assert len(archived) == 3  # the first batch only
    assert archived == gone  # deleted = archived, nothing more, nothing less
    assert AuditLogPrune.objects.get().rows == 3
    assert AuditLogPrune.objects.get().finished_at is None  # the run did not finish
    assert services.rollups_check() == []

    # Once there is room again, a second run takes the rest into its own archive.
    monkeypatch.setattr(retention.ArchiveFile, "sync", real_sync)
    second = tmp_path / "second.csv.gz"
    result = retention.audit_log_prune(cutoff=world.cutoff, archive=second, batch_size=3)
    rest = {int(r["id"]) for r in _read_archive(second)}
    assert result.deleted == len(world.pruned) - 3
    assert archived | rest == set(world.pruned) and not archived & rest
    assert set(AuditLog.objects.values_list("pk", flat=True)) == set(world.kept)
    assert services.rollups_check() == []


def test_an_existing_archive_file_is_never_overwritten(world: World, tmp_path: Path) -> None:
    archive = tmp_path / "audit.csv.gz"
    archive.write_bytes(b"last year's archive")
    with pytest.raises(retention.RetentionRefused, match="exists"):
        retention.audit_log_prune(cutoff=world.cutoff, archive=archive)
    assert archive.read_bytes() == b"last year's archive"
    assert AuditLog.objects.filter(pk__in=world.pruned).count() == len(world.pruned)
    with pytest.raises(retention.RetentionRefused, match="Cannot create"):
        retention.audit_log_prune(cutoff=world.cutoff, archive=tmp_path / "no-dir" / "a.csv.gz")
    assert AuditLog.objects.filter(pk__in=world.pruned).count() == len(world.pruned)
    assert not AuditLogPrune.objects.exists()


def test_recent_rows_cannot_be_pruned(world: World, tmp_path: Path) -> None:
    with pytest.raises(retention.RetentionRefused, match="at least 35 days"):
        retention.retention_cutoff(older_than_days=30)
    with pytest.raises(retention.RetentionRefused, match="less than 35 days ago"):
        retention.audit_log_prune(cutoff=timezone.now(), archive=None)
    assert AuditLog.objects.count() == len(world.pruned) + len(world.kept)


# --- the command --------------------------------------------------------------------------------


def test_the_command_dry_run_counts_and_changes_nothing(world: World, tmp_path: Path) -> None:
    out = _call("--older-than", f"{OLDER_THAN}d", "--dry-run")
    assert f"would archive {len(world.pruned)} rows" in out
    assert "kept 1 of unfinished requests and 1 waiting for a price" in out
    assert AuditLog.objects.count() == len(world.pruned) + len(world.kept)
    assert not AuditLogPrune.objects.exists() and not list(tmp_path.iterdir())


def test_the_command_archives_and_deletes(world: World, tmp_path: Path) -> None:
    archive = tmp_path / "audit.csv.gz"
    out = _call("--older-than", str(OLDER_THAN), "--archive", str(archive), "--batch-size", "3")
    assert f"{len(world.pruned)} rows archived to {archive}" in out and "in 3 batch(es)" in out
    assert len(_read_archive(archive)) == len(world.pruned)
    assert set(AuditLog.objects.values_list("pk", flat=True)) == set(world.kept)


def test_the_command_deletes_without_an_archive_only_when_told(world: World) -> None:
    with pytest.raises(CommandError, match="--archive FILE.csv.gz, or --no-archive"):
        _call("--older-than", "400d")
    assert AuditLog.objects.count() == len(world.pruned) + len(world.kept)
    out = _call("--older-than", "400d", "--no-archive")
    assert f"{len(world.pruned)} rows deleted without an archive" in out
    assert AuditLogPrune.objects.get().archive_path == ""
    assert services.rollups_check() == []


@pytest.mark.parametrize("age", ["soon", "400 days", "--older-than=-5d", "1.5y"])
def test_the_command_refuses_an_age_it_cannot_read(age: str) -> None:
    args = [age] if age.startswith("--") else ["--older-than", age]
    with pytest.raises(CommandError, match="whole days"):
        _call(*args, "--dry-run")


def _call(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("prune_audit_log", *args, stdout=out)
    return out.getvalue()


def test_staff_see_each_prune_run_in_the_admin(world: World, tmp_path: Path) -> None:
    archive = tmp_path / "audit.csv.gz"
    retention.audit_log_prune(cutoff=world.cutoff, archive=archive)
    admin = make_user("root", staff=True)
    admin.is_superuser = True
    admin.save()
    client = Client()
    client.force_login(admin)
    page = client.get("/admin/usage/auditlogprune/")
    assert page.status_code == 200
    assert str(archive.resolve()) in page.content.decode()
    assert client.get("/admin/usage/auditlogprune/add/").status_code == 403  # a record, not a form
