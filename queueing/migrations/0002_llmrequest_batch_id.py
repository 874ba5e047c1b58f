# Hand-written (only this field) so it does not pick up other pending model changes.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("queueing", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="llmrequest",
            name="batch_id",
            field=models.CharField(blank=True, db_index=True, default="", max_length=128),
        ),
    ]
