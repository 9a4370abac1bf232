"""Selectors at 100,000 devices on PostgreSQL: the filtered lists answer from the label index (EXPLAIN of the very
statements the endpoints run), in the same number of statements as unfiltered.

The fleet is cloned in SQL from one device made through the services (its target state and one sensor row with
it), as the benchmark seeds; three labels each (plant: 10 values, role: 5, rack on a third of them), so that
``plant=3,role=boiler`` selects 2,000 devices (2%)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devices.models import Device, DeviceLabel, DeviceTargetState
from reconciliation.services.sensors import sensor_create
from sensors.models import DeviceSensor
from tests.factories import DeviceFactory, SensorPayloadFactory
from tests.helpers import devices_url, fleet_sensors_url

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

DEVICES = 100_000
SELECTOR = "plant=3,role=boiler"
SELECTED = DEVICES // 50


def _columns(model, *, skip: tuple[str, ...]) -> list[str]:
    return [f.column for f in model._meta.concrete_fields if f.column not in skip]


def _clone(cursor, model, *, source_pk: int, overrides: dict[str, str], times: str, where: str = "TRUE") -> None:
    """``INSERT ... SELECT`` of copies of one row (``src``): one per row of ``times`` (a FROM item) that ``where``
    keeps, ``overrides`` giving SQL expressions for the columns that differ."""
    qn = connection.ops.quote_name
    columns = _columns(model, skip=("id", *overrides))
    table = qn(model._meta.db_table)
    cursor.execute(
        f"INSERT INTO {table} ({', '.join(map(qn, [*columns, *overrides]))}) "
        f"SELECT {', '.join([*(f'src.{qn(c)}' for c in columns), *overrides.values()])} "
        f"FROM {table} AS src, {times} WHERE src.{qn(model._meta.pk.column)} = %s AND {where}",
        [source_pk],
    )


@pytest.fixture
def fleet(superuser):
    template = DeviceFactory(name="device-000000")
    sensor_create(device_uuid=template.uuid, data=SensorPayloadFactory(name="temp"), user=superuser)
    with connection.cursor() as cursor:
        _clone(
            cursor,
            Device,
            source_pk=template.pk,
            overrides={
                "uuid": "md5('device' || n)::uuid",
                "name": "'device-' || lpad(n::text, 6, '0')",
                "api_key_digest": "md5('key' || n) || md5('more' || n)",
            },
            times=f"generate_series(1, {DEVICES - 1}) AS n",
        )
        for source in (DeviceTargetState.objects.get(device=template), DeviceSensor.objects.get(device=template)):
            _clone(
                cursor,
                type(source),
                source_pk=source.pk,
                overrides={"device_id": "d.id"},
                times="devices_device AS d",
                where=f"d.id <> {template.pk}",
            )
        cursor.execute(
            "INSERT INTO devices_devicelabel (device_id, key, value) "
            "SELECT id, 'plant', (id % 10)::text FROM devices_device "
            "UNION ALL SELECT id, 'role', (ARRAY['boiler','pump','chiller','meter','valve'])[1 + (id / 10) % 5] "
            "FROM devices_device "
            "UNION ALL SELECT id, 'rack', (id % 97)::text FROM devices_device WHERE id % 3 = 0"
        )
        for model in (Device, DeviceTargetState, DeviceSensor, DeviceLabel):
            cursor.execute(f"ANALYZE {connection.ops.quote_name(model._meta.db_table)}")
    return template


def _explained(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def _label_statements(queries: list[dict]) -> list[str]:
    return [q["sql"] for q in queries if "devices_devicelabel" in q["sql"] and q["sql"].startswith("SELECT")]


def test_the_filtered_device_list_reads_the_label_index(admin_client, fleet):
    assert Device.objects.count() == DEVICES

    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(devices_url(), {"selector": SELECTOR, "limit": 100})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == SELECTED
    assert len(body["results"]) == 100
    assert all(d["labels"]["plant"] == "3" and d["labels"]["role"] == "boiler" for d in body["results"])
    # COUNT(*), the page, the page's labels: as many statements as unfiltered
    assert len(captured) == 3
    filtered = [sql for sql in _label_statements(captured.captured_queries) if "EXISTS" in sql]
    assert len(filtered) == 2  # the count and the page
    for sql in filtered:
        plan = _explained(sql)
        assert "device_label_key_value_idx" in plan, plan
        assert "Seq Scan on devices_devicelabel" not in plan, plan
        assert "Seq Scan on devices_device " not in plan, plan


def test_the_filtered_sensor_lists_read_the_labels_through_an_index(admin_client, fleet):
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(fleet_sensors_url(), {"selector": SELECTOR, "limit": 100})

    assert response.status_code == 200
    rows = response.json()["results"]
    assert len(rows) == 100
    selected = set(Device.objects.filter(labels__key="plant", labels__value="3").values_list("uuid", flat=True))
    assert {row["deviceUuid"] for row in rows} <= {str(uuid) for uuid in selected}
    assert len(captured) == 1  # the page: cursor pagination counts nothing
    (sql,) = _label_statements(captured.captured_queries)
    plan = _explained(sql)
    assert "Seq Scan on devices_devicelabel" not in plan, plan
    assert "Index" in plan, plan
