from __future__ import annotations

import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from usage import price_sheets, services


def _source_name(path: Path) -> str:
    """The sheet's path relative to the project (what docs/pricing.md names)."""
    try:
        return path.resolve().relative_to(Path(settings.BASE_DIR).resolve()).as_posix()
    except ValueError:
        return str(path)


class Command(BaseCommand):
    help = (
        "Price rows as JSON (the price sheet format, see usage/price_sheets): "
        "`prices export FILE` writes every row with its bands; `prices load FILE` checks the "
        "whole file, then upserts by (model, speed, effective_from) in one transaction and "
        "re-prices calls recorded without a price; `prices table [FILE]` prints the markdown "
        "pricing table (of the shipped sheet by default; docs/pricing.md is its output). "
        "FILE '-' is stdout / stdin."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="Write every price row, with its bands.")
        export.add_argument("file", help="Path, or - for stdout.")
        load = sub.add_parser("load", help="Check a sheet, then upsert its rows atomically.")
        load.add_argument("file", help="Path, or - for stdin.")
        table = sub.add_parser("table", help="Print the markdown pricing table.")
        table.add_argument(
            "file", nargs="?", help="A sheet (default: the shipped one); - for stdin."
        )
        table.add_argument(
            "--database", action="store_true", help="Tabulate the stored rows instead."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "export":
            self._export(options["file"])
        elif action == "load":
            self._load(options["file"])
        else:
            self._table(options["file"], database=options["database"])

    def _read(self, name: str) -> str:
        if name == "-":
            return sys.stdin.read()
        try:
            return Path(name).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"Cannot read {name}: {exc.strerror}.") from None

    def _export(self, name: str) -> None:
        text = services.prices_export()
        if name == "-":
            self.stdout.write(text, ending="")
            return
        Path(name).write_text(text, encoding="utf-8")
        rows = len(services.price_rows())
        self.stderr.write(f"exported {rows} price row(s) to {name}")

    def _load(self, name: str) -> None:
        try:
            rows = price_sheets.loads(self._read(name))
            result = services.prices_load(rows=rows)
        except price_sheets.SheetError as exc:
            raise CommandError(f"{name}: {exc} Nothing was written.") from None
        self.stdout.write(result.summary(source="stdin" if name == "-" else name))

    def _table(self, name: str | None, *, database: bool) -> None:
        if database:
            rows, source = services.price_rows(), "the database"
        elif name is None:
            rows = list(price_sheets.shipped_rows())
            source = _source_name(price_sheets.SHIPPED_SHEET)
        else:
            try:
                rows = price_sheets.loads(self._read(name))
            except price_sheets.SheetError as exc:
                raise CommandError(f"{name}: {exc}") from None
            source = "stdin" if name == "-" else name
        self.stdout.write(price_sheets.markdown_table(rows, source=source), ending="")
