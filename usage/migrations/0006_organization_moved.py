"""The organization foreign keys point to ``organizations.Organization`` (state only: the
model kept its table, so the columns and constraints are unchanged)."""

import django.db.models.deletion
from django.db import migrations, models


def _organization(on_delete):
    return models.ForeignKey(
        blank=True,
        db_index=False,
        null=True,
        on_delete=on_delete,
        related_name="+",
        to="organizations.organization",
    )


class Migration(migrations.Migration):
    dependencies = [
        ("organizations", "0001_initial"),
        ("usage", "0005_price_sheet_2026_12_01"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="auditlog",
                    name="organization",
                    field=_organization(django.db.models.deletion.PROTECT),
                ),
                migrations.AlterField(
                    model_name="organizationusagedaily",
                    name="organization",
                    field=_organization(django.db.models.deletion.CASCADE),
                ),
                migrations.AlterField(
                    model_name="sessionusage",
                    name="organization",
                    field=_organization(django.db.models.deletion.SET_NULL),
                ),
                migrations.AlterField(
                    model_name="usagedaily",
                    name="organization",
                    field=_organization(django.db.models.deletion.CASCADE),
                ),
            ],
            database_operations=[],
        ),
    ]
