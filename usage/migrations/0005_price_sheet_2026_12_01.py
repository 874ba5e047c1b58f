"""Prices as data, every rate explicit.

1. The rows seeded by 0002 (and any added since) had input and output prices only; their cache
   rates were fixed multiples of input, which was right for those models then: 5-minute write
   1.25x, 1-hour write 2x, cache read 0.1x. Those become explicit.
2. Existing audit rows get the per-token rates they were billed at, from that same formula
   (x0.5 on the batch tier), so every cost can be recomputed from its row.
3. The shipped price sheet ``usage/price_sheets/2026-12-01.json`` is loaded: rows it has that
   the database lacks are created; a row already stored under the same (model, speed,
   effective_from) keeps its rates as the admins have them, and gains the sheet's bands when
   its rates are the sheet's (Sonnet 4.5's long-context band).
4. Models with calls recorded without a price are noted for the staff notice.

The sheet file never changes after shipping, and this migration reads it with its own few
lines of parsing (not ``usage.price_sheets``), so it means the same thing forever. Calls left
unpriced are re-priced by ``usage``'s post_migrate hook, which runs the app's current code.
"""

import datetime
import json
from decimal import Decimal
from pathlib import Path

from django.db import migrations
from django.db.models import Count, F, Max, Min, Q

SHEET = Path(__file__).resolve().parent.parent / "price_sheets" / "2026-12-01.json"
RATES = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
FIELDS = (
    "input_usd_per_mtok",
    "cache_write_5m_usd_per_mtok",
    "cache_write_1h_usd_per_mtok",
    "cache_read_usd_per_mtok",
    "output_usd_per_mtok",
)
OLD_MULTIPLIERS = (Decimal(1), Decimal("1.25"), Decimal(2), Decimal("0.1"))  # of input
TIER_MULTIPLIERS = {1: Decimal(1), 2: Decimal("0.5"), 3: Decimal(1)}  # standard, batch, priority
SPEEDS = {"standard": 1, "fast": 2}
PLACES = Decimal("0.001")


def _exact(value, what):
    if value != value.quantize(PLACES):
        raise RuntimeError(
            f"{what} = {value} has more than 3 decimals and cannot be stored exactly; fix that "
            "price row's input price (it was finer than any published price) and migrate again."
        )
    return value


def _pico_per_token(usd_per_mtok):
    pico = usd_per_mtok * 1_000_000
    if pico != pico.to_integral_value():
        raise RuntimeError(f"{usd_per_mtok} USD per Mtok is not whole picodollars per token")
    return int(pico)


def make_rates_explicit(apps, schema_editor):
    ModelPrice = apps.get_model("usage", "ModelPrice")
    for row in ModelPrice.objects.all():
        price_in = Decimal(row.input_usd_per_mtok)
        row.cache_write_5m_usd_per_mtok = _exact(
            price_in * Decimal("1.25"), f"{row.model} 5m write"
        )
        row.cache_write_1h_usd_per_mtok = _exact(price_in * 2, f"{row.model} 1h write")
        row.cache_read_usd_per_mtok = _exact(price_in * Decimal("0.1"), f"{row.model} cache read")
        row.save(
            update_fields=[
                "cache_write_5m_usd_per_mtok",
                "cache_write_1h_usd_per_mtok",
                "cache_read_usd_per_mtok",
            ]
        )


def backfill_audit_rates(apps, schema_editor):
    """One UPDATE per (price period, tier): the rows the old code priced with that row."""
    ModelPrice = apps.get_model("usage", "ModelPrice")
    AuditLog = apps.get_model("usage", "AuditLog")
    by_model = {}
    for row in ModelPrice.objects.order_by("model", "effective_from"):
        by_model.setdefault(row.model, []).append(row)
    billed = (
        Q(input_tokens__gt=0)
        | Q(output_tokens__gt=0)
        | Q(cache_creation_input_tokens__gt=0)
        | Q(cache_read_input_tokens__gt=0)
    )
    for model, rows in by_model.items():
        for i, row in enumerate(rows):
            start = datetime.datetime.combine(row.effective_from, datetime.time.min, datetime.UTC)
            period = AuditLog.objects.filter(billed, model=model, price_missing=False)
            period = period.filter(occurred_at__gte=start)
            if i + 1 < len(rows):
                end = datetime.datetime.combine(
                    rows[i + 1].effective_from, datetime.time.min, datetime.UTC
                )
                period = period.filter(occurred_at__lt=end)
            price_in, price_out = Decimal(row.input_usd_per_mtok), Decimal(row.output_usd_per_mtok)
            for tier, tier_multiplier in TIER_MULTIPLIERS.items():
                rate_in, write_5m, write_1h, read = (
                    _pico_per_token(price_in * m * tier_multiplier) for m in OLD_MULTIPLIERS
                )
                period.filter(service_tier=tier).update(
                    input_rate_pico_usd=rate_in,
                    cache_write_5m_rate_pico_usd=write_5m,
                    cache_write_1h_rate_pico_usd=write_1h,
                    cache_read_rate_pico_usd=read,
                    output_rate_pico_usd=_pico_per_token(price_out * tier_multiplier),
                    web_search_rate_pico_usd=0,
                    price_band=0,
                )
    recomputed = (
        F("input_tokens") * F("input_rate_pico_usd")
        + F("cache_creation_5m_tokens") * F("cache_write_5m_rate_pico_usd")
        + F("cache_creation_1h_tokens") * F("cache_write_1h_rate_pico_usd")
        + F("cache_read_input_tokens") * F("cache_read_rate_pico_usd")
        + F("output_tokens") * F("output_rate_pico_usd")
    )
    differ = AuditLog.objects.exclude(cost_pico_usd=recomputed).count()
    if differ:
        # Only possible where a price row was edited in place after calls were billed with it:
        # those rows carry the rates in force now, which are not the ones they were billed at.
        print(
            f"\n  usage 0005: {differ} audit row(s) do not recompute from the rates of the price "
            "row now on file for their date (that price was edited after they were billed); "
            "their stored cost is unchanged."
        )


def load_price_sheet(apps, schema_editor):
    ModelPrice = apps.get_model("usage", "ModelPrice")
    PriceBand = apps.get_model("usage", "PriceBand")
    sheet = json.loads(SHEET.read_text(encoding="utf-8"), parse_float=Decimal)
    for entry in sheet["prices"]:
        until = entry.get("effective_until")
        price, created = ModelPrice.objects.get_or_create(
            model=entry["model"],
            speed=SPEEDS[entry["speed"]],
            effective_from=datetime.date.fromisoformat(entry["effective_from"]),
            defaults={
                **{f: Decimal(str(entry[k])) for f, k in zip(FIELDS, RATES, strict=True)},
                "effective_until": datetime.date.fromisoformat(until) if until else None,
                "web_search_usd_per_1k": Decimal(str(entry["web_search_per_1k"])),
                "note": entry.get("note", ""),
            },
        )
        same_rates = all(
            Decimal(getattr(price, f)) == Decimal(str(entry[k]))
            for f, k in zip(FIELDS, RATES, strict=True)
        )
        if created or (same_rates and not PriceBand.objects.filter(price=price).exists()):
            # a stored row at the sheet's rates is the sheet's price: it gains its bands too
            for band in entry.get("bands", []):
                PriceBand.objects.create(
                    price=price,
                    above_prompt_tokens=band["above_prompt_tokens"],
                    **{f: Decimal(str(band[k])) for f, k in zip(FIELDS, RATES, strict=True)},
                )


def drop_fast_rows(apps, schema_editor):
    """Going back to 0004 and before: the old schema has one price per model and date, so the
    fast-mode rows cannot stay (the standard ones can)."""
    apps.get_model("usage", "ModelPrice").objects.filter(speed=2).delete()


def note_unpriced_models(apps, schema_editor):
    AuditLog = apps.get_model("usage", "AuditLog")
    UnpricedModel = apps.get_model("usage", "UnpricedModel")
    flagged = (
        AuditLog.objects.filter(price_missing=True)
        .values("model", "speed")
        .annotate(n=Count("id"), first=Min("occurred_at"), last=Max("occurred_at"))
        .order_by()
    )
    for group in flagged:
        UnpricedModel.objects.get_or_create(
            model=group["model"],
            speed=group["speed"],
            defaults={
                "first_seen_at": group["first"],
                "last_seen_at": group["last"],
                "calls": group["n"],
            },
        )


class Migration(migrations.Migration):
    dependencies = [("usage", "0004_price_rows_bands_and_applied_rates")]

    operations = [
        migrations.RunPython(make_rates_explicit, migrations.RunPython.noop),
        migrations.RunPython(backfill_audit_rates, migrations.RunPython.noop),
        migrations.RunPython(load_price_sheet, drop_fast_rows),
        migrations.RunPython(note_unpriced_models, migrations.RunPython.noop),
    ]
