"""Organization and Membership now live in ``organizations`` (its 0001): the foreign keys here
point there and the old model state goes. State only: the tables and columns stay as they are.
Runs after ``usage/0006`` so no model still points to ``queueing.Organization`` when it goes."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("organizations", "0001_initial"),
        ("queueing", "0008_llmrequest_model_wait_s"),
        ("usage", "0006_organization_moved"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="quota",
                    name="organization",
                    field=models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="quota",
                        to="organizations.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="quotaalert",
                    name="organization",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="quota_alerts",
                        to="organizations.organization",
                    ),
                ),
                migrations.AlterField(
                    model_name="llmrequest",
                    name="organization",
                    field=models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="llm_requests",
                        to="organizations.organization",
                    ),
                ),
                migrations.DeleteModel(name="Membership"),
                migrations.DeleteModel(name="Organization"),
            ],
            database_operations=[],
        ),
    ]
