"""The gateway served for real: ``ratelimit_project.asgi`` under uvicorn on a loopback port,
the official Anthropic SDK pointed at it, the emulator upstream.

``served`` runs the server in a thread of this process (so it shares the test database); the
worker host is the ``gateway`` fixture's, or none (``held``: requests stay queued).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import pytest
import uvicorn
from django.contrib.auth.models import User

from llm_calls.client import close_clients
from llm_calls.emulator.process import EmulatorProcess
from queueing.auth import api_token_create
from queueing.models import ApiToken
from tests.conftest import Gateway
from tests.usage.factories import make_user
from usage import services as usage_services

MODEL = "claude-haiku-4-5"  # answers in text, no thinking unless asked
THINKING_MODEL = "claude-sonnet-5-5"  # thinks by default: streams thinking blocks


@dataclass
class Served:
    url: str
    emulator: EmulatorProcess
    user: User
    token: ApiToken
    key: str

    def sdk(self, **kwargs: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            api_key=kwargs.pop("api_key", self.key), base_url=self.url, max_retries=0, **kwargs
        )

    def async_sdk(self, **kwargs: Any) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=kwargs.pop("api_key", self.key), base_url=self.url, max_retries=0, **kwargs
        )


@pytest.fixture
def server() -> Iterator[str]:
    config = uvicorn.Config(
        "ratelimit_project.asgi:application",
        host="127.0.0.1",
        port=0,
        lifespan="off",
        log_level="warning",
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = uv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=15)


def _served(url: str, emulator: EmulatorProcess) -> Served:
    user = make_user("alice")
    token, key = api_token_create(user=user, name="alice's app")
    return Served(url=url, emulator=emulator, user=user, token=token, key=key)


@pytest.fixture
def served(gateway: Gateway, server: str) -> Served:
    """The endpoint with workers behind it: calls are answered."""
    return _served(server, gateway.emulator)


@pytest.fixture
def held(
    emulator: EmulatorProcess, redis_client: Any, settings: Any, transactional_db: Any, server: str
) -> Iterator[Served]:
    """The endpoint with no worker host: every request waits in the queue."""
    settings.ANTHROPIC_BASE_URL = emulator.base_url
    settings.ANTHROPIC_API_KEY = "sk-ant-test-gateway"
    usage_services.prices_seed_defaults()
    usage_services.price_cache_clear()
    yield _served(server, emulator)
    close_clients()
