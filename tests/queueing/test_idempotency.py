"""Idempotency-Key: a client that retries after a timeout or a dropped connection gets the one
request its key names, never a second one."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connections
from django.test import Client

from queueing.auth import api_token_create
from queueing.models import LLMRequest, Quota
from tests.usage.factories import api_client, make_user

BODY = {
    "session_id": "idem",
    "model": "claude-sonnet-5-5",
    "max_tokens": 50,
    "messages": [{"role": "user", "content": "book the meeting room"}],
}


def post(api: Client, key: str | None, body: dict[str, Any] = BODY) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return api.post("/api/v1/requests", data=body, content_type="application/json", headers=headers)


@pytest.mark.django_db
def test_the_same_key_names_the_same_request(redis_client) -> None:
    user = make_user("retrier")
    api = api_client(user)

    first = post(api, "7d1c2a8e-retry-1")
    again = post(api, "7d1c2a8e-retry-1")
    other = post(api, "7d1c2a8e-retry-2")

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert other.json()["id"] != first.json()["id"]
    assert LLMRequest.objects.filter(user=user).count() == 2
    # Without a key every POST is a new request, as before.
    post(api, None)
    post(api, None)
    assert LLMRequest.objects.filter(user=user).count() == 4


@pytest.mark.django_db
def test_a_key_reused_for_another_body_is_refused_and_changes_nothing(redis_client) -> None:
    user = make_user("reuser")
    api = api_client(user)
    first = post(api, "k-1")

    changed = post(api, "k-1", {**BODY, "max_tokens": 60})

    assert changed.status_code == 422
    error = changed.json()["error"]
    assert error["type"] == "idempotency_error" and error["field"] == "Idempotency-Key"
    assert error["request_id"] == first.json()["id"]
    assert LLMRequest.objects.filter(user=user).count() == 1


@pytest.mark.django_db
def test_keys_belong_to_their_user(redis_client) -> None:
    one, two = make_user("one"), make_user("two")
    assert (
        post(api_client(one), "shared").json()["id"] != post(api_client(two), "shared").json()["id"]
    )


@pytest.mark.django_db
def test_a_rejected_request_is_answered_429_again_under_its_key(redis_client) -> None:
    user = make_user("over")
    Quota.objects.create(user=user, tokens_per_day=10)
    api = api_client(user)

    first = post(api, "over-1")
    again = post(api, "over-1")

    assert first.status_code == again.status_code == 429
    assert again.json()["error"]["request_id"] == first.json()["error"]["request_id"]
    assert again["Idempotent-Replayed"] == "true"
    assert LLMRequest.objects.filter(user=user).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "key", ["", " leading", "trailing ", "x" * 256, "tab\there", "caf\u00e9"], ids=repr
)
def test_a_malformed_key_is_refused_before_anything_is_written(redis_client, key: str) -> None:
    user = make_user("typo")
    response = post(api_client(user), key)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "Idempotency-Key"
    assert not LLMRequest.objects.filter(user=user).exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_make_one_request(redis_client) -> None:
    user = make_user("impatient")
    _, raw = api_token_create(user=user, name="idem")
    start = threading.Barrier(6)
    ids: list[int] = []
    failures: list[BaseException] = []

    def retry() -> None:
        try:
            api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
            start.wait()
            response = post(api, "same-burst")
            assert response.status_code == 202, response.content
            ids.append(response.json()["id"])
        except BaseException as exc:  # reported below, with the test's own assertion
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=retry) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not failures, failures
    assert len(ids) == 6 and len(set(ids)) == 1
    assert LLMRequest.objects.filter(user=user).count() == 1
