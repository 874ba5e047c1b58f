"""The billing journal does not depend on Redis: while Redis is away, a billed response is
journaled in a file of the worker process, and recovered from it if that process dies."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from django.utils import timezone

from llm_calls.types import Attempt, MessageResult, Usage
from queueing import journal, services
from queueing.models import LLMRequest
from tests.usage.factories import make_user
from usage.models import AuditLog

MODEL = "claude-sonnet-5-5"


def billed(text: str = "the answer") -> MessageResult:
    return MessageResult(
        message_id="msg_journal",
        model=MODEL,
        text=text,
        stop_reason="end_turn",
        usage=Usage(input_tokens=40, output_tokens=12),
        request_id="req_journal",
        attempts=(
            Attempt(
                number=1, status=200, error_type=None, request_id="req_journal", duration_ms=800.0
            ),
        ),
        latency_ms=800.0,
    )


def journal_files(var_dir: Path) -> list[Path]:
    return sorted((var_dir / "journal").glob("*.jsonl"))


@pytest.mark.django_db
def test_while_redis_is_away_a_billed_response_is_journaled_in_a_file(
    own_redis, settings, tmp_path: Path
) -> None:
    settings.VAR_DIR = tmp_path
    own_redis.stop()

    assert journal.remember(request_id=7, dispatch=1, result=billed())

    [path] = journal_files(tmp_path)
    assert path.name.endswith(f"-{os.getpid()}.jsonl")
    line = json.loads(path.read_text().splitlines()[0])
    assert line["request_id"] == 7 and json.loads(line["entry"])["text"] == "the answer"
    journal.forget(request_id=7, dispatch=1)  # recorded: nothing left to recover from the file
    assert journal_files(tmp_path) == []


@pytest.mark.django_db
def test_a_dead_processs_file_is_adopted_and_its_request_finished_without_a_second_call(
    redis_client, settings, tmp_path: Path
) -> None:
    settings.VAR_DIR = tmp_path
    settings.GATEWAY_LEASE_TTL_S = 3
    row = services.submit_request(
        user=make_user("offline-billed"),
        session_id="journal",
        model=MODEL,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=50,
    )
    LLMRequest.objects.filter(pk=row.pk).update(
        status=LLMRequest.Status.RUNNING,
        dispatch_count=1,
        dispatched_at=timezone.now() - dt.timedelta(minutes=5),
        started_at=timezone.now() - dt.timedelta(minutes=5),
    )
    # A worker process journaled the billed answer in its file while Redis was away, then died.
    dead = subprocess.Popen(["true"])
    dead.wait()
    directory = tmp_path / "journal"
    directory.mkdir()
    entry = journal._encode(1, billed("recovered from the file"))
    (directory / f"{journal._HOST}-{dead.pid}.jsonl").write_text(
        json.dumps({"request_id": row.pk, "entry": entry}) + "\n" + '{"request_id": 9, "ent'
    )

    # The reaper trusts a missing lease once Redis has been up for a lease's lifetime.
    while redis_client.info("server")["uptime_in_seconds"] < 3:
        time.sleep(0.2)
    assert services.recover_orphans(grace_s=0) == 1

    row.refresh_from_db()
    assert row.status == LLMRequest.Status.SUCCEEDED
    assert row.dispatch_count == 1  # not dispatched again: the API is not called a second time
    assert row.result is not None and row.result["text"] == "recovered from the file"
    audit = AuditLog.objects.get(llm_request=row)
    assert (audit.input_tokens, audit.output_tokens) == (40, 12)
    assert journal_files(tmp_path) == []


@pytest.mark.django_db
def test_a_live_processs_file_is_left_alone(redis_client, settings, tmp_path: Path) -> None:
    settings.VAR_DIR = tmp_path
    directory = tmp_path / "journal"
    directory.mkdir()
    mine = directory / f"{journal._HOST}-{os.getpid()}.jsonl"
    mine.write_text(json.dumps({"request_id": 3, "entry": journal._encode(1, billed())}) + "\n")

    assert journal.adopt_orphaned_files() == 0
    assert mine.exists() and journal.pending(request_id=3) is None
