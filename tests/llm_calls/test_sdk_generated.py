"""The official SDK's own generated API tests, run against the emulator.

The SDK's source distribution ships ``tests/api_resources/…``: one test per method and way of
calling it (plain, raw response, streaming response; sync, async, async over aiohttp), aimed at
``TEST_API_BASE_URL``. Run against the emulator they prove that every body it returns parses
under the SDK's strict response validation. A few fail, and would fail against the real API
too (placeholder ids, a placeholder ``inference_geo``, a retired model): those are listed in
``EXPECTED_FAILURES`` with the reason, and must keep failing — everything else must pass.
docs/emulator.md carries the same table.

The SDK's tests are fetched from PyPI once per installed SDK version (``pip download
--no-binary :all:``, the sdist) into ``var/sdk-tests/`` and reused from there. Offline with an
empty cache this test fails and says so: it is never skipped. Their dev dependencies
(pytest-asyncio, respx, inline-snapshot, http-snapshot[httpx]) must be installed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from llm_calls.emulator.process import PROJECT_ROOT, EmulatorProcess

SDK_TEST_FILES = (
    "tests/api_resources/test_messages.py",
    "tests/api_resources/test_models.py",
    "tests/api_resources/messages/test_batches.py",
)
SDK_TEST_DEPENDENCIES = ("pytest_asyncio", "respx", "inline_snapshot", "http_snapshot")
CACHE_DIR = PROJECT_ROOT / "var" / "sdk-tests"

_PLACEHOLDER_BATCH = (
    "retrieves, cancels or deletes the batch 'message_batch_id', a placeholder no batch has: "
    "404 not_found_error"
)
_PLACEHOLDER_CURSORS = (
    "pages with the placeholder cursors before_id='before_id' and after_id='after_id' at once: "
    "400 invalid_request_error"
)

# (test file, test function) → why it fails against the emulator and the real API alike. The
# sync and async classes and every client parameter ([loose], [strict], [aiohttp]) share it.
EXPECTED_FAILURES: dict[tuple[str, str], str] = {
    **{
        ("test_messages.py", f"test_method_create_with_all_params_overload_{n}"): (
            "sends inference_geo='inference_geo', which is no region (only 'global' and 'us' "
            "exist): 400 invalid_request_error"
        )
        for n in (1, 2)
    },
    **{
        ("test_models.py", name): (
            "retrieves the model 'model_id', a placeholder no model has: 404 not_found_error"
        )
        for name in (
            "test_method_retrieve",
            "test_method_retrieve_with_all_params",
            "test_raw_response_retrieve",
            "test_streaming_response_retrieve",
        )
    },
    ("test_models.py", "test_method_list_with_all_params"): _PLACEHOLDER_CURSORS,
    ("test_batches.py", "test_method_list_with_all_params"): _PLACEHOLDER_CURSORS,
    **{
        ("test_batches.py", f"test_{kind}_{action}"): _PLACEHOLDER_BATCH
        for action in ("retrieve", "cancel", "delete")
        for kind in ("method", "raw_response", "streaming_response")
    },
    **{
        ("test_batches.py", f"test_method_{action}_with_all_params"): _PLACEHOLDER_BATCH
        for action in ("retrieve", "cancel", "delete")
    },
}


def _sdk_source() -> Path:
    """The unpacked sdist of the installed SDK version, fetched into var/ on first use."""
    version = importlib.metadata.version("anthropic")
    root = CACHE_DIR / f"anthropic-{version}"
    if all((root / name).is_file() for name in SDK_TEST_FILES):
        return root
    download = CACHE_DIR / "download"
    download.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"anthropic=={version}",
        "-d",
        str(download),
    ]
    try:
        fetched = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"fetching the anthropic {version} sdist from PyPI timed out (300 s)")
    archive = download / f"anthropic-{version}.tar.gz"
    if fetched.returncode != 0 or not archive.is_file():
        pytest.fail(
            f"could not fetch the anthropic {version} sdist (its tests are what this test runs) "
            f"with `{' '.join(command)}`; this needs PyPI once, after which {CACHE_DIR} holds "
            f"it.\n{fetched.stdout[-2000:]}{fetched.stderr[-2000:]}"
        )
    with tarfile.open(archive) as sdist:
        sdist.extractall(CACHE_DIR, filter="data")
    missing = [name for name in SDK_TEST_FILES if not (root / name).is_file()]
    if missing:
        pytest.fail(f"the anthropic {version} sdist has no {', '.join(missing)}")
    return root


def _outcomes(report: Path) -> dict[str, str]:
    """Test id → "passed" | "failed" | "skipped", from pytest's JUnit XML."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)
        test_id = f"{module[0].replace('.', '/')}.py::{module[-1]}::{case.get('name')}"
        tags = {child.tag for child in case}
        outcomes[test_id] = (
            "failed"
            if tags & {"failure", "error"}
            else "skipped"
            if "skipped" in tags
            else "passed"
        )
    return outcomes


def _expected_reason(test_id: str) -> str | None:
    path, _cls, name = test_id.split("::")
    return EXPECTED_FAILURES.get((Path(path).name, name.split("[")[0]))


def test_the_sdk_generated_tests_pass_against_the_emulator(
    emulator: EmulatorProcess, tmp_path: Path
) -> None:
    missing = [name for name in SDK_TEST_DEPENDENCIES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(
            "the SDK's tests need their dev dependencies: pytest-asyncio, respx, "
            f"inline-snapshot, http-snapshot[httpx] (missing: {', '.join(missing)})"
        )
    source = _sdk_source()
    report = tmp_path / "sdk-tests.xml"
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ANTHROPIC_", "PYTEST_")) and name != "DJANGO_SETTINGS_MODULE"
    }
    env["TEST_API_BASE_URL"] = emulator.base_url
    command = [
        sys.executable,
        "-m",
        "pytest",
        # The SDK's own settings, less xdist (-n auto): its alias plugin makes respx mock httpx2.
        "-o",
        "addopts=",
        "-p",
        "tests._alias_httpx",
        "-p",
        "no:django",
        "-p",
        "no:cacheprovider",
        "-q",
        "--tb=line",
        f"--junitxml={report}",
        *SDK_TEST_FILES,
    ]
    run = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode in (0, 1) and report.is_file(), run.stdout[-4000:] + run.stderr[-4000:]
    outcomes = _outcomes(report)
    assert len(outcomes) > 200, f"only {len(outcomes)} SDK tests ran:\n{run.stdout[-4000:]}"

    unexpected = sorted(t for t, o in outcomes.items() if o == "failed" and not _expected_reason(t))
    skipped = sorted(t for t, o in outcomes.items() if o == "skipped" and not _expected_reason(t))
    stale = sorted(t for t, o in outcomes.items() if o != "failed" and _expected_reason(t))
    assert not unexpected, "SDK tests failed against the emulator:\n" + "\n".join(unexpected)
    assert not skipped, "SDK tests were skipped:\n" + "\n".join(skipped)
    assert not stale, "listed as expected failures but did not fail:\n" + "\n".join(stale)
    listed = {key for key in EXPECTED_FAILURES}
    seen = {(Path(t.split("::")[0]).name, t.split("::")[2].split("[")[0]) for t in outcomes}
    assert listed <= seen, f"expected failures naming no SDK test: {sorted(listed - seen)}"
