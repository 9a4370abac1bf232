from django.db import migrations, models


class Migration(migrations.Migration):
    """``seq`` and ``reported_at`` were one high-water mark in two units (a ``reported_at`` in microseconds made
    every later ``seq`` stale): each clock gets its own. The stored mark is kept as the seq mark it mostly was;
    a mark above 10**15 was a ``reported_at`` (in microseconds) and moves to the clock's own mark.

    The rename is not safe for a rolling deploy: stop the old servers before migrating."""

    dependencies = [("devices", "0005_provisioning_keys")]

    operations = [
        migrations.RenameField(model_name="device", old_name="last_report_order", new_name="last_report_seq"),
        migrations.AddField(
            model_name="device",
            name="last_report_clock_us",
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.RunSQL(
            # A mark above any plausible seq is a reported_at (microseconds since 1970 pass 10**15 in 2001).
            sql="UPDATE devices_device SET last_report_clock_us = last_report_seq, last_report_seq = NULL "
            "WHERE last_report_seq >= 1000000000000000",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.RunSQL(
            # The stored report's seq held a reported_at in microseconds when the report carried no seq.
            sql="UPDATE devices_devicecurrentstate SET seq = NULL WHERE seq >= 1000000000000000",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
