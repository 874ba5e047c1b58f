"""The demo's helpdesk app: code written for Anthropic's API, pointed at the gateway.

Part of ``make demo``'s traffic does not use the Python service functions: it comes from an
app of the first organization that calls ``POST /v1/messages`` with the official SDK, changed
in two places only — the base URL (the demo's ``manage.py serve``) and the key (a gateway key
of the organization's service account ``helpdesk-app``, made for each run). Half of its calls
stream. It shows what a drop-in endpoint means: the same queue, fairness, limiter, caching and
``audit_log`` as everything else, for an app that knows nothing about the gateway.

Calls run on a small thread pool, as a real service's request handlers would; each waits for
its answer. A quota refusal is a 400 the SDK does not retry (the row is kept as rejected, like
any other); anything else that reaches the app is counted as a client error and shown.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from llm_calls.client import app_client
from organizations.models import Membership, Organization
from queueing.auth import api_token_create
from queueing.models import ApiToken

APP_USERNAME = "helpdesk-app"
APP_KEY_NAME = "demo helpdesk app"
THREADS = 16
MAX_ERRORS_KEPT = 5


def app_key(*, organization: str) -> str:
    """A fresh gateway key for the service account (made if new), the previous runs' revoked."""
    users = get_user_model()
    with transaction.atomic():
        org = Organization.objects.get(name=organization)
        account, made = users.objects.get_or_create(username=APP_USERNAME)
        if made:
            account.set_unusable_password()  # a service: it calls the API, it never logs in
            account.save(update_fields=["password"])
        Membership.objects.get_or_create(
            user=account, defaults={"organization": org, "role": Membership.Role.SERVICE}
        )
        ApiToken.objects.filter(user=account, name=APP_KEY_NAME).update(revoked=True)
        _, key = api_token_create(user=account, name=APP_KEY_NAME)
    return key


class HelpdeskApp:
    """Sends calls through the endpoint in the background; counts what came back."""

    def __init__(self, *, base_url: str, key: str) -> None:
        self.base_url = base_url
        self.key = key
        # max_retries as the SDK ships: the gateway must not give it anything worth retrying.
        self._client = app_client(base_url=base_url, api_key=key)
        self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="helpdesk-app")
        self._lock = threading.Lock()
        self.sent = 0
        self.streamed = 0
        self.in_flight = 0
        self.refused = 0
        self.errors = 0
        self.error_samples: list[str] = []

    def send(
        self, *, params: Mapping[str, Any], priority: str, session_id: str, stream: bool
    ) -> None:
        with self._lock:
            self.sent += 1
            self.streamed += stream
            self.in_flight += 1
        self._pool.submit(self._call, dict(params), priority, session_id, stream)

    def _call(self, params: dict[str, Any], priority: str, session_id: str, stream: bool) -> None:
        headers = {"x-gateway-priority": priority, "x-gateway-session": session_id}
        try:
            if stream:
                with self._client.messages.stream(**params, extra_headers=headers) as events:
                    for _ in events.text_stream:
                        pass
            else:
                self._client.messages.create(**params, extra_headers=headers)
        except Exception as exc:  # the SDK's errors: this app only counts them
            with self._lock:
                if getattr(exc, "status_code", None) == 400 and "quota" in str(exc).lower():
                    self.refused += 1
                else:
                    self.errors += 1
                    if len(self.error_samples) < MAX_ERRORS_KEPT:
                        self.error_samples.append(f"{type(exc).__name__}: {exc}"[:300])
        finally:
            with self._lock:
                self.in_flight -= 1

    def close(self, *, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
        self._client.close()
