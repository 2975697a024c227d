# The outbox table serves the save path first (issue 8): only indexes a query needs, partial
# where they can be, and a time-ordered primary key (models/outbox.py justifies each one).

import django.utils.timezone
import django_klaviyo.models.outbox
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('django_klaviyo', '0003_list_consent'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='outboxevent',
            name='klaviyo_outbox_status_kind',
        ),
        migrations.RemoveIndex(
            model_name='outboxevent',
            name='klaviyo_outbox_error_code',
        ),
        migrations.RemoveIndex(
            model_name='outboxevent',
            name='klaviyo_outbox_sent_at',
        ),
        migrations.AlterField(
            model_name='outboxevent',
            name='created_at',
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AlterField(
            model_name='outboxevent',
            name='id',
            field=models.UUIDField(default=django_klaviyo.models.outbox.new_outbox_id, editable=False, primary_key=True, serialize=False),
        ),
        migrations.AlterField(
            model_name='outboxevent',
            name='unique_id',
            field=models.CharField(blank=True, max_length=255),
        ),
        migrations.AddIndex(
            model_name='outboxevent',
            index=models.Index(condition=models.Q(('status__in', ['retrying', 'dead'])), fields=['status', 'last_error_code', 'kind', 'id'], name='klaviyo_outbox_failing'),
        ),
        migrations.AddIndex(
            model_name='outboxevent',
            index=models.Index(condition=models.Q(('status', 'sent')), fields=['sent_at'], name='klaviyo_outbox_sent'),
        ),
    ]
