from __future__ import annotations

import datetime as dt
import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from llm_calls.retry import ClaudeCallError
from usage import reconcile


def _date(raw: str | None, name: str) -> dt.date | None:
    if raw is None:
        return None
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise CommandError(f"{name} must be a date as YYYY-MM-DD, got {raw!r}.") from None


class Command(BaseCommand):
    help = (
        "Reconcile audit_log with Anthropic's usage and cost reports (Admin API key in "
        "ANTHROPIC_ADMIN_API_KEY, the gateway's key id in ANTHROPIC_API_KEY_ID) for whole UTC "
        "days, --since to --until inclusive (default: the last 7 days, today included). Stores "
        "the result; prints a summary, then one JSON object as the last line."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--since", help="First UTC day, YYYY-MM-DD.")
        parser.add_argument("--until", help="Last UTC day (inclusive), YYYY-MM-DD.")
        parser.add_argument(
            "--refetch",
            action="store_true",
            help="Recompute days already final and matched too (they are reused otherwise).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        since, until = reconcile.default_window()
        since = _date(options["since"], "--since") or since
        until = _date(options["until"], "--until") or until
        if options["since"] and not options["until"] and until < since:
            until = since
        try:
            run = reconcile.reconciliation_run(since=since, until=until, refetch=options["refetch"])
        except reconcile.ReconcileError as err:
            raise CommandError(str(err)) from err
        except ClaudeCallError as err:
            raise CommandError(f"Could not read Anthropic's reports: {err}") from err
        line = run.result["summary"]
        for day in run.result["days"]:
            state = "final" if day["final"] else "provisional"
            verdict = "match" if day["match"] else "DIFFERS"
            self.stdout.write(f"{day['day']} ({state}): {verdict} — {' '.join(day['causes'])}")
        un = line["unattributed"]
        self.stdout.write(
            f"{since}..{until}: {'match' if line['match'] else 'DIFFERENCES'}; unattributed "
            f"${un['cost_usd']} ({un['input_tokens']} input, {un['output_tokens']} output "
            f"tokens); missing from Anthropic's books ${line['missing_from_audit']['cost_usd']}; "
            f"price drift ${line['price_drift_usd']}."
        )
        self.stdout.write(json.dumps(line, sort_keys=False))
