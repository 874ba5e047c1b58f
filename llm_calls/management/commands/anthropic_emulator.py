"""``python manage.py anthropic_emulator``: serve the Anthropic API emulator on loopback."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llm_calls.emulator.config import TIER1_ITPM, TIER1_OTPM, TIER1_RPM, EmulatorConfig
from llm_calls.emulator.errors import ApiError
from llm_calls.emulator.server import run_forever


class Command(BaseCommand):
    help = "Run the Anthropic Messages API emulator (rate limits, caching, faults, batches)."
    # The emulator plays Anthropic and uses none of the project: checking its URLs and models
    # would only make the fake API fail to start whenever unrelated app code is mid-change.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
        parser.add_argument("--rpm", type=int, default=TIER1_RPM, help="0 = unlimited")
        parser.add_argument("--itpm", type=int, default=TIER1_ITPM, help="0 = unlimited")
        parser.add_argument("--otpm", type=int, default=TIER1_OTPM, help="0 = unlimited")
        parser.add_argument("--latency-ms", type=float, default=0.0)
        parser.add_argument("--fault-rate-529", type=float, default=0.0)
        parser.add_argument("--fault-rate-500", type=float, default=0.0)
        parser.add_argument("--fault-rate-reset", type=float, default=0.0)
        parser.add_argument("--fault-rate-slow", type=float, default=0.0)
        parser.add_argument("--slow-ms", type=float, default=0.0)
        parser.add_argument("--fault-rate-midstream", type=float, default=0.0)
        parser.add_argument("--chars-per-token", type=float, default=4.0)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--otpm-mode", choices=("reserve", "actual"), default="reserve")
        parser.add_argument("--batch-latency-ms", type=float, default=1000.0)

    def handle(self, *args: Any, **options: Any) -> None:
        keys = [
            "rpm",
            "itpm",
            "otpm",
            "latency_ms",
            "fault_rate_529",
            "fault_rate_500",
            "fault_rate_reset",
            "fault_rate_slow",
            "slow_ms",
            "fault_rate_midstream",
            "chars_per_token",
            "seed",
            "otpm_mode",
            "batch_latency_ms",
        ]
        # Same checks as POST /_emulator/config, so a bad flag fails loudly at startup.
        try:
            config = EmulatorConfig().updated({key: options[key] for key in keys})
        except ApiError as exc:
            raise CommandError(exc.message) from None

        def announce(base_url: str) -> None:
            sys.stdout.write(f"anthropic emulator listening on {base_url}\n")
            sys.stdout.flush()

        run_forever(config, host=options["host"], port=options["port"], announce=announce)
