from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("django_klaviyo", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="outboxevent",
            name="rules_version",
            field=models.PositiveSmallIntegerField(default=0),
        ),
    ]
