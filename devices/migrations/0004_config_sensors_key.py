"""Desired and reported sensors move from ``config.protocolAdapterDevices`` (the seed note's name, which the real
agent never read) to ``config.sensors``, where every agent version reads them.

Target states, their history and stored reports are rewritten; events are not (the log is append-only: replay
reads old events through ``sensors.validation.config_upcast``). Stored reports also get the health layout by
source, and an empty digest, so the device's next report is compared afresh and re-projects its rows.
"""

from django.db import migrations

LEGACY = "protocolAdapterDevices"
SENSORS = "sensors"
BATCH = 500


def _upcast(config):
    # A frozen copy of sensors.validation.config_upcast: migrations must not change when the app code does.
    if not isinstance(config, dict) or LEGACY not in config:
        return None
    upcast = {key: value for key, value in config.items() if key not in (LEGACY, SENSORS)}
    upcast[SENSORS] = config[LEGACY]
    return upcast


def _downcast(config):
    if not isinstance(config, dict) or SENSORS not in config or LEGACY in config:
        return None
    downcast = {key: value for key, value in config.items() if key != SENSORS}
    downcast[LEGACY] = config[SENSORS]
    return downcast


def _legacy_health(health):
    """{name: {"healthy", "lastError"}} (the seed note's ``sensor_health``) -> the normalized layout by source."""
    if not health or any(key in health for key in ("endpoints_health", "protocol_adapters_health", "sensor_health")):
        return None
    normalized = {}
    for name, entry in health.items():
        if not isinstance(entry, dict):
            continue
        healthy = entry.get("healthy")
        error = entry.get("lastError")
        normalized[name] = {
            "status": {True: "online", False: "offline"}.get(healthy, ""),
            "connected": healthy if isinstance(healthy, bool) else None,
            "quality": "",
            "lastError": error if isinstance(error, str) else "",
        }
    return {"sensor_health": normalized}


def _rewrite(model, convert):
    changed = []
    for row in model.objects.only("pk", "config").iterator(chunk_size=BATCH):
        config = convert(row.config)
        if config is None:
            continue
        row.config = config
        changed.append(row)
        if len(changed) == BATCH:
            model.objects.bulk_update(changed, ["config"])
            changed = []
    if changed:
        model.objects.bulk_update(changed, ["config"])


def forward(apps, schema_editor):
    for name in ("DeviceTargetState", "DeviceTargetStateVersion", "DeviceCurrentState"):
        _rewrite(apps.get_model("devices", name), _upcast)
    current_states = apps.get_model("devices", "DeviceCurrentState")
    for current in current_states.objects.only("pk", "sensor_health").iterator(chunk_size=BATCH):
        health = _legacy_health(current.sensor_health)
        if health is not None:
            current_states.objects.filter(pk=current.pk).update(sensor_health=health)
    current_states.objects.update(digest="", parts={})


def backward(apps, schema_editor):
    for name in ("DeviceTargetState", "DeviceTargetStateVersion", "DeviceCurrentState"):
        _rewrite(apps.get_model("devices", name), _downcast)
    apps.get_model("devices", "DeviceCurrentState").objects.update(digest="", parts={})


class Migration(migrations.Migration):
    dependencies = [("devices", "0003_device_facts_and_report_parts")]

    operations = [migrations.RunPython(forward, backward)]
