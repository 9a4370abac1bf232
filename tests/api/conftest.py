from tests.api.fixtures import sensor_device  # noqa: F401 (a fixture)
