"""``python manage.py claude_models``: the model catalog as a Markdown table (docs/models.md)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from llm_calls import catalog


class Command(BaseCommand):
    help = "Print the Claude models the gateway knows, with their limits and request rules."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(catalog.markdown_table(), ending="")
