"""Logs an operator can search: JSON lines, each with the request it belongs to."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from queueing import services
from queueing.models import LLMRequest
from ratelimit_project.logs import JsonFormatter, RequestIdFilter, request_context
from tests.conftest import Gateway
from tests.usage.factories import make_user


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_a_line_is_one_json_object_with_its_request(json_lines: io.StringIO) -> None:
    log = logging.getLogger("tests.logs")
    log.warning("outside any call")
    with request_context(request_id=42):
        log.warning("while handling %s", "it")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")
    outside, inside, failed = lines(json_lines)
    assert outside["request_id"] == "-" and outside["message"] == "outside any call"
    assert inside == {**inside, "request_id": "42", "message": "while handling it"}
    assert inside["level"] == "WARNING" and inside["logger"] == "tests.logs" and inside["ts"]
    assert failed["request_id"] == "42" and "ValueError: boom" in failed["exc"]


def test_every_line_of_a_call_on_a_worker_names_its_request(
    gateway: Gateway, json_lines: io.StringIO
) -> None:
    gateway.emulator.configure(script=[{"status": 529}, {"slow_ms": 0}])
    row = services.submit_request(
        user=make_user("olga"),
        session_id="logs",
        model="claude-haiku-4-5",
        max_tokens=20,
        messages=[{"role": "user", "content": "Hello"}],
    )
    done = services.wait_for_result(request_id=row.pk, timeout_s=30)
    assert done.status == LLMRequest.Status.SUCCEEDED and done.attempts == 2

    retried = [line for line in lines(json_lines) if "retrying in" in line["message"]]
    assert retried, lines(json_lines)
    assert {line["request_id"] for line in retried} == {str(row.pk)}
