"""Organization and Membership move here from ``queueing``: state only.

The tables stay where they are (``queueing_organization``, ``queueing_membership``, created by
``queueing/0001_initial``); only Django's model state changes app. ``usage/0006`` and
``queueing/0009`` re-point the foreign keys, and ``queueing/0009`` drops the old state.

The two content types are renamed with the models, so permissions already granted on them
(``change_organization``, ...) and the admin's history keep applying; on a new database there is
nothing to rename yet (content types are created after migrating).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

MODELS = ("organization", "membership")


def _move_content_types(apps, schema_editor, source, target):
    content_type = apps.get_model("contenttypes", "ContentType")
    rows = content_type.objects.using(schema_editor.connection.alias)
    for model in MODELS:
        if not rows.filter(app_label=target, model=model).exists():
            rows.filter(app_label=source, model=model).update(app_label=target)


def forwards(apps, schema_editor):
    _move_content_types(apps, schema_editor, "queueing", "organizations")


def backwards(apps, schema_editor):
    _move_content_types(apps, schema_editor, "organizations", "queueing")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("queueing", "0001_initial"),  # created the two tables
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Organization",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("name", models.CharField(max_length=200, unique=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                    ],
                    options={
                        "db_table": "queueing_organization",
                        "ordering": ["name"],
                    },
                ),
                migrations.CreateModel(
                    name="Membership",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        (
                            "role",
                            models.CharField(
                                choices=[("member", "Member"), ("admin", "Organization admin")],
                                default="member",
                                max_length=16,
                            ),
                        ),
                        (
                            "user",
                            models.OneToOneField(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="membership",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "organization",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="memberships",
                                to="organizations.organization",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "queueing_membership",
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.RunPython(forwards, backwards, elidable=True),
    ]
