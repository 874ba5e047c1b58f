"""The Models API through the SDK (strict validation): listing, paging, lifecycle, retrieval."""

from __future__ import annotations

# Tests prove the emulator against the unmodified official SDK, so they import it directly.
import anthropic  # noqa: TID251
import pytest

from llm_calls.emulator.process import EmulatorProcess

from .emulator_support import raw_call, sdk

CURRENT = [
    "claude-fable-5-2",
    "claude-haiku-5-5",
    "claude-sonnet-5-5",
    "claude-opus-5-5",
    "claude-fable-5-1",
    "claude-opus-5",
    "claude-sonnet-5",
    "claude-fable-5",
    "claude-opus-4-8",
    "claude-opus-4-7",
    "claude-sonnet-4-6",
    "claude-opus-4-6",
    "claude-opus-4-5",
    "claude-haiku-4-5",
    # Release dates not published: created_at is the epoch, so they sort last.
    "claude-mythos-5-2",
    "claude-mythos-5-1",
    "claude-mythos-5",
    "claude-mythos-preview",
]
DATED = CURRENT.index("claude-mythos-5-2")


def test_the_list_is_active_and_deprecated_models_newest_first(emulator: EmulatorProcess) -> None:
    models = list(sdk(emulator).models.list())
    assert [m.id for m in models] == CURRENT
    assert {m.lifecycle for m in models} == {"active", "deprecated"}
    created = [m.created_at for m in models]
    assert created == sorted(created, reverse=True)
    assert {m.created_at.year for m in models[DATED:]} == {1970}


def test_pages_follow_the_cursor_and_the_sdk_paginates(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)
    page = client.models.list(limit=5)
    assert [m.id for m in page.data] == CURRENT[:5]
    assert page.has_more is True
    assert page.first_id == CURRENT[0] and page.last_id == CURRENT[4]
    after = client.models.list(limit=5, after_id=CURRENT[4])
    assert [m.id for m in after.data] == CURRENT[5:10]
    before = client.models.list(limit=2, before_id=CURRENT[4])
    assert [m.id for m in before.data] == CURRENT[2:4]
    assert [m.id for m in client.models.list(limit=3)] == CURRENT, "auto-paging walks all pages"


def test_retired_models_are_listed_only_when_asked_for(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)
    retired = [m.id for m in client.models.list(lifecycle=["retired"])]
    assert retired[0] == "claude-sonnet-4-5"
    assert set(retired) == {
        "claude-sonnet-4-5",
        "claude-opus-4-1",
        "claude-opus-4-0",
        "claude-sonnet-4-0",
        "claude-3-7-sonnet",
        "claude-3-5-haiku",
        "claude-3-opus",
        "claude-3-haiku",
    }
    deprecated = [m.id for m in client.models.list(lifecycle=["deprecated"])]
    assert deprecated == ["claude-opus-4-5"]
    everything = list(client.models.list(lifecycle=["active", "deprecated", "retired"]))
    assert len(everything) == len(CURRENT) + len(retired)


def test_retrieve_describes_the_model_and_its_capabilities(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)
    opus = client.models.retrieve("claude-opus-4-5")
    assert opus.type == "model" and opus.display_name == "Claude Opus 4.5"
    assert opus.lifecycle == "deprecated" and opus.line == "opus"
    assert opus.deprecated_at is not None and opus.deprecated_at.date().isoformat() == "2026-11-23"
    assert opus.retires_at is not None and opus.retires_at.date().isoformat() == "2027-01-22"
    assert (opus.max_input_tokens, opus.max_tokens) == (200_000, 64_000)
    assert opus.capabilities is not None
    assert opus.capabilities.effort.supported and not opus.capabilities.effort.max.supported
    haiku = client.models.retrieve("claude-haiku-4-5")
    assert haiku.capabilities is not None and not haiku.capabilities.effort.supported
    fable = client.models.retrieve("claude-fable-5-2")
    assert fable.capabilities is not None
    types = fable.capabilities.thinking.types
    assert types.adaptive.supported and not types.disabled.supported
    assert not types.enabled.supported
    assert fable.lifecycle == "active" and fable.deprecated_at is None


def test_a_retired_model_is_retrievable_as_retired(emulator: EmulatorProcess) -> None:
    sonnet = sdk(emulator).models.retrieve("claude-sonnet-4-5")
    assert sonnet.lifecycle == "retired"
    assert sonnet.retires_at is not None and sonnet.retires_at.date().isoformat() == "2026-11-30"


def test_a_dated_alias_resolves_to_its_model(emulator: EmulatorProcess) -> None:
    client = sdk(emulator)
    assert client.models.retrieve("claude-haiku-4-5-20251001").id == "claude-haiku-4-5"
    message = client.messages.create(
        model="claude-haiku-4-5-20251001",
        max_tokens=10,
        messages=[{"role": "user", "content": "x"}],
    )
    assert message.model == "claude-haiku-4-5-20251001", "the id is echoed as sent"


def test_an_unknown_model_is_404(emulator: EmulatorProcess) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk(emulator).models.retrieve("claude-imaginary-9")
    assert caught.value.body["error"]["message"] == "model: claude-imaginary-9"  # type: ignore[index]


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "lifecycle[]=legacy", "after_id=nope"])
def test_bad_list_parameters_are_400(emulator: EmulatorProcess, query: str) -> None:
    response = raw_call(emulator, f"/v1/models?{query}", method="GET")
    assert response.status == 400
    assert response.json["error"]["type"] == "invalid_request_error"


def test_the_models_api_needs_a_key(emulator: EmulatorProcess) -> None:
    assert raw_call(emulator, "/v1/models", method="GET", key=None).status == 401
    assert raw_call(emulator, "/v1/models/claude-opus-5-5", method="GET", key=None).status == 401
