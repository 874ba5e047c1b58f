"""Run the emulator as a subprocess: for tests, benchmarks and the demo.

with EmulatorProcess(rpm=0, itpm=0, otpm=0, latency_ms=500) as emulator:
    client = anthropic.Anthropic(api_key="k", base_url=emulator.base_url, max_retries=0)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LISTENING = "anthropic emulator listening on "


class EmulatorError(RuntimeError):
    pass


class EmulatorProcess:
    """``python manage.py anthropic_emulator --port 0 ...`` in a child process.

    Keyword options mirror the CLI flags (``latency_ms=500`` → ``--latency-ms 500``); limits
    default to Tier 1 like the command, and 0 means unlimited.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        rpm: int | None = None,
        itpm: int | None = None,
        otpm: int | None = None,
        latency_ms: float | None = None,
        fault_rate_529: float | None = None,
        fault_rate_500: float | None = None,
        fault_rate_reset: float | None = None,
        fault_rate_slow: float | None = None,
        slow_ms: float | None = None,
        fault_rate_midstream: float | None = None,
        chars_per_token: float | None = None,
        seed: int | None = None,
        otpm_mode: str | None = None,
        batch_latency_ms: float | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.options: dict[str, Any] = {
            "rpm": rpm,
            "itpm": itpm,
            "otpm": otpm,
            "latency_ms": latency_ms,
            "fault_rate_529": fault_rate_529,
            "fault_rate_500": fault_rate_500,
            "fault_rate_reset": fault_rate_reset,
            "fault_rate_slow": fault_rate_slow,
            "slow_ms": slow_ms,
            "fault_rate_midstream": fault_rate_midstream,
            "chars_per_token": chars_per_token,
            "seed": seed,
            "otpm_mode": otpm_mode,
            "batch_latency_ms": batch_latency_ms,
        }
        self._process: subprocess.Popen[str] | None = None
        self._base_url: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        args = [
            sys.executable,
            "manage.py",
            "anthropic_emulator",
            "--host",
            self.host,
            "--port",
            "0",
        ]
        for name, value in self.options.items():
            if value is not None:
                args += ["--" + name.replace("_", "-"), str(value)]
        return args

    def start(self) -> EmulatorProcess:
        if self._process is not None:
            return self
        process = subprocess.Popen(
            self.command(),
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        self._process = process
        found: list[str] = []
        ready = threading.Event()

        def read_banner() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                if line.startswith(LISTENING):
                    found.append(line[len(LISTENING) :].strip())
                    ready.set()
                    break
            ready.set()
            # Keep draining so the child never blocks on a full pipe.
            for _line in process.stdout:
                pass

        threading.Thread(target=read_banner, name="emulator-stdout", daemon=True).start()
        if not ready.wait(self.startup_timeout_s) or not found:
            self.stop()
            stderr = process.stderr.read() if process.stderr else ""
            raise EmulatorError(f"emulator did not start: {stderr.strip()[-2000:]}")
        assert process.stderr is not None
        threading.Thread(target=process.stderr.read, name="emulator-stderr", daemon=True).start()
        self._base_url = found[0]
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses and control calls ---------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise EmulatorError(
                "emulator is not running; call start() or use it as a context manager"
            )
        return self._base_url

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def url(self, path: str) -> str:
        return self.base_url + "/" + path.lstrip("/")

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url(path), data=data, method=method, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise EmulatorError(
                f"{method} {path} failed: {exc.code} {exc.read().decode()}"
            ) from None

    def reset(self) -> None:
        """Clear buckets, cache, ledger, log, batches and script; restore the startup config."""
        self._call("POST", "/_emulator/reset", {})

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change the runtime config (buckets refill to the new limits); returns the new config."""
        result: dict[str, Any] = self._call("POST", "/_emulator/config", changes)
        return result

    def config(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_emulator/config")
        return result

    def ledger(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_emulator/ledger")
        return result

    def log(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/_emulator/log")
        return result

    def stats(self) -> dict[str, Any]:
        """``{in_flight, max_in_flight, messages_total}`` for /v1/messages (max and total since
        the last reset)."""
        result: dict[str, Any] = self._call("GET", "/_emulator/stats")
        return result

    def health(self) -> bool:
        return bool(self._call("GET", "/_emulator/health").get("ok"))

    def api_key_id(self, api_key: str) -> str:
        """The ``api_key_id`` the Admin API's usage report gives ``api_key`` (``apikey_…``)."""
        result: dict[str, Any] = self._call("POST", "/_emulator/api_key_id", {"api_key": api_key})
        return str(result["api_key_id"])

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward (ages cache entries, refills buckets)."""
        self._call("POST", "/_emulator/clock", {"advance_s": seconds})
