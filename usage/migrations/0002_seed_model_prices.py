"""Seed the list prices of 2026-01-01 (ANTHROPIC_API.md). A copy of the data, not an import of
``usage.pricing``, so this migration means the same thing forever."""

import datetime
from decimal import Decimal

from django.db import migrations

EFFECTIVE_FROM = datetime.date(2026, 1, 1)
PRICES = {
    # model id: (input, output) USD per million tokens
    "claude-opus-4-8": ("5", "25"),
    "claude-opus-4-7": ("5", "25"),
    "claude-opus-4-6": ("5", "25"),
    "claude-opus-4-5": ("5", "25"),
    "claude-opus-4-1": ("15", "75"),
    "claude-opus-4-0": ("15", "75"),
    "claude-sonnet-4-6": ("3", "15"),
    "claude-sonnet-4-5": ("3", "15"),
    "claude-sonnet-4-0": ("3", "15"),
    "claude-haiku-4-5": ("1", "5"),
    "claude-3-5-haiku-latest": ("0.80", "4"),
}


def seed_prices(apps, schema_editor):
    ModelPrice = apps.get_model("usage", "ModelPrice")
    for model, (price_in, price_out) in PRICES.items():
        ModelPrice.objects.update_or_create(
            model=model,
            effective_from=EFFECTIVE_FROM,
            defaults={
                "input_usd_per_mtok": Decimal(price_in),
                "output_usd_per_mtok": Decimal(price_out),
            },
        )


def unseed_prices(apps, schema_editor):
    ModelPrice = apps.get_model("usage", "ModelPrice")
    ModelPrice.objects.filter(model__in=PRICES, effective_from=EFFECTIVE_FROM).delete()


class Migration(migrations.Migration):
    dependencies = [("usage", "0001_initial")]

    operations = [migrations.RunPython(seed_prices, unseed_prices)]
