"""Free space in the sensor rows' pages (PostgreSQL only), so that a report's upsert of a device's rows can update
them in place (HOT: no index entry written when no indexed column changes). Half of each page: a changed report
rewrites every row of the device, and its rows sit together. SQLite has no such setting."""

from django.db import migrations

TABLE, FILLFACTOR = "sensors_devicesensor", 50


def _set(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(TABLE)} SET (fillfactor = {FILLFACTOR})")


def _reset(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(TABLE)} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [
        ("sensors", "0002_sensor_health_and_unreported_fields"),
    ]

    operations = [migrations.RunPython(_set, _reset, elidable=False)]
