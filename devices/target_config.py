"""Where a configuration document (a device's target, a version of its history, a stored report) keeps its
sensors.

Under ``config.sensors``, where every version of the real agent reads them. ``protocolAdapterDevices`` is the seed
note's name for the same list, which the agent never read; it is still accepted from staff and from reports
(converted), and found in events written before.
"""

from typing import Any

SENSORS_KEY = "sensors"
LEGACY_SENSORS_KEY = "protocolAdapterDevices"


def config_sensors(config: dict) -> list:
    """The sensor list of a stored configuration (target, history or report), whichever name it was stored under."""
    sensors = config.get(SENSORS_KEY)
    if sensors is None:
        sensors = config.get(LEGACY_SENSORS_KEY)
    return sensors if isinstance(sensors, list) else []


def config_upcast(config: Any) -> Any:
    """A configuration as it is stored today: the sensors under ``sensors``, the legacy key gone.

    Events are never rewritten, so a ``target_state.updated`` written before the rename is read through this. A
    configuration that had both keys kept its managed sensors under the legacy one (``sensors`` was then an
    untouched pass-through key), so the legacy list wins."""
    if not isinstance(config, dict) or LEGACY_SENSORS_KEY not in config:
        return config
    upcast = {key: value for key, value in config.items() if key not in (LEGACY_SENSORS_KEY, SENSORS_KEY)}
    upcast[SENSORS_KEY] = config[LEGACY_SENSORS_KEY]
    return upcast
