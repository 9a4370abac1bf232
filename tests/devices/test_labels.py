"""Labels in the database: the label services (one device, and in batches over a selector), their events and
signal, ``labels_of``, and ``Selector.q()`` agreeing with ``Selector.matches`` on the database in use."""

import json
import secrets
import uuid

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.labels import LABELS_PER_DEVICE_MAX, Selector, labels_of
from devices.models import Device, DeviceLabel
from devices.provisioning import device_register, registration_parse
from devices.services import device_labels_set, device_labels_update, devices_labels_update
from devices.signals import device_labels_changed
from events.models import Event
from sensors.models import DeviceSensor
from tests.factories import DeviceFactory, SensorPayloadFactory

from .test_selectors_parse import label_sets, selectors

pytestmark = pytest.mark.django_db


@pytest.fixture
def announced():
    """The ``device_labels_changed`` signals sent, as lists of device ids."""
    received: list[list[int]] = []

    def receiver(sender, device_ids, **kwargs):
        received.append(device_ids)

    device_labels_changed.connect(receiver, weak=False)
    yield received
    device_labels_changed.disconnect(receiver)


def stored(device) -> dict[str, str]:
    return dict(DeviceLabel.objects.filter(device=device).order_by("key").values_list("key", "value"))


def label_events(device):
    return list(Event.objects.filter(aggregate_id=str(device.uuid), type="device.labels_changed").order_by("sequence"))


# -- one device ---------------------------------------------------------------------------------------------------


def test_set_replaces_the_labels_records_before_and_after_and_announces_on_commit(
    device, superuser, announced, django_capture_on_commit_callbacks
):
    device_labels_set(device_uuid=device.uuid, labels={"plant": "3", "role": "boiler"}, user=superuser)
    revision = Device.objects.get(pk=device.pk).revision

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = device_labels_set(device_uuid=device.uuid, labels={"plant": "4", "zone": ""}, user=superuser)
        assert announced == []  # not before the commit

    assert result == {"plant": "4", "zone": ""} == stored(device)
    events = label_events(device)
    assert [e.data for e in events] == [
        {"before": {}, "after": {"plant": "3", "role": "boiler"}},
        {"before": {"plant": "3", "role": "boiler"}, "after": {"plant": "4", "zone": ""}},
    ]
    assert events[-1].metadata["actor"] == superuser.username
    assert Device.objects.get(pk=device.pk).revision == revision + 1  # under the device lock
    assert len(callbacks) == 1
    callbacks[0]()
    assert announced == [[device.pk]]


def test_update_sets_and_removes_and_an_unchanged_result_writes_nothing(
    device, announced, django_capture_on_commit_callbacks, django_assert_num_queries
):
    device_labels_set(device_uuid=device.uuid, labels={"plant": "3", "role": "boiler"}, user=None)

    with django_capture_on_commit_callbacks(execute=True):
        result = device_labels_update(
            device_uuid=device.uuid, set={"role": "pump", "new": "1"}, remove=["plant", "absent"], user=None
        )
    assert result == {"new": "1", "role": "pump"} == stored(device)
    assert label_events(device)[-1].data["after"] == result

    # lock (UPDATE ... RETURNING), read the device, read its labels: nothing else when nothing changes (and the
    # savepoint of the test's transaction, taken and released)
    with django_capture_on_commit_callbacks(execute=True), django_assert_num_queries(2 + 3):
        assert (
            device_labels_update(device_uuid=device.uuid, set={"role": "pump"}, remove=["plant"], user=None) == result
        )
    assert len(label_events(device)) == 2
    assert announced == [[device.pk]]


def test_a_change_writes_in_a_constant_number_of_statements(device, django_assert_num_queries):
    device_labels_set(device_uuid=device.uuid, labels={f"k{n}": "a" for n in range(20)}, user=None)

    # lock, read device, read labels, DELETE, upsert, event INSERT (in a savepoint of the test's transaction)
    with django_assert_num_queries(2 + 6):
        device_labels_set(device_uuid=device.uuid, labels={f"k{n}": "b" for n in range(10, 40)}, user=None)

    assert stored(device) == {f"k{n}": "b" for n in range(10, 40)}


@pytest.mark.parametrize(
    ("call", "field", "message"),
    [
        (lambda d: device_labels_set(device_uuid=d.uuid, labels=["plant"], user=None), "labels", "JSON object"),
        (lambda d: device_labels_set(device_uuid=d.uuid, labels={"-x": "1"}, user=None), "labels", "'-x'"),
        (lambda d: device_labels_set(device_uuid=d.uuid, labels={"x": 3}, user=None), "labels", "must be a string"),
        (lambda d: device_labels_set(device_uuid=d.uuid, labels={"x": "a b"}, user=None), "labels", "'a b'"),
        (
            lambda d: device_labels_set(
                device_uuid=d.uuid, labels={f"k{n}": "" for n in range(LABELS_PER_DEVICE_MAX + 1)}, user=None
            ),
            "labels",
            "at most 64 labels",
        ),
        (lambda d: device_labels_update(device_uuid=d.uuid, set={}, remove="x", user=None), "remove", "list"),
        (lambda d: device_labels_update(device_uuid=d.uuid, set={}, remove=["-x"], user=None), "remove", "'-x'"),
        (
            lambda d: device_labels_update(device_uuid=d.uuid, set={"x": "1"}, remove=["x"], user=None),
            "remove",
            "both set and removed: x",
        ),
        (
            lambda d: device_labels_update(
                device_uuid=d.uuid, set={f"n{n}": "" for n in range(LABELS_PER_DEVICE_MAX)}, remove=[], user=None
            ),
            "labels",
            "would leave 65",
        ),
    ],
)
def test_bad_labels_are_refused_and_nothing_is_written(call, field, message):
    device = DeviceFactory(labels={"plant": "3"})
    events = Event.objects.count()

    with pytest.raises(ValidationError) as raised:
        call(device)

    assert message in " ".join(raised.value.message_dict[field])
    assert stored(device) == {"plant": "3"}
    assert Event.objects.count() == events


def test_an_unknown_device_is_does_not_exist(db):
    with pytest.raises(Device.DoesNotExist):
        device_labels_set(device_uuid="00000000-0000-0000-0000-000000000000", labels={}, user=None)


def test_labels_go_with_their_device(db):
    device = DeviceFactory(labels={"plant": "3"})
    Device.objects.filter(pk=device.pk).delete()
    assert not DeviceLabel.objects.exists()


# -- many devices -------------------------------------------------------------------------------------------------


def test_bulk_update_runs_in_batches_announcing_each_batch_once(
    db, announced, django_capture_on_commit_callbacks, django_assert_num_queries
):
    boilers = [DeviceFactory(labels={"plant": "3", "role": "boiler"}) for _ in range(5)]
    already = DeviceFactory(labels={"plant": "3", "role": "boiler", "tier": "gold"})
    other = DeviceFactory(labels={"plant": "4", "role": "boiler"})

    with django_capture_on_commit_callbacks(execute=True):
        result = devices_labels_update(
            selector="plant=3,role=boiler", set={"tier": "gold"}, remove=["legacy"], user=None, batch_size=2
        )

    assert (result.matched, result.changed) == (6, 5)
    assert [stored(d) for d in boilers] == [{"plant": "3", "role": "boiler", "tier": "gold"}] * 5
    assert stored(other) == {"plant": "4", "role": "boiler"}
    assert len(label_events(already)) == 1  # its creation only
    assert announced == [[boilers[0].pk, boilers[1].pk], [boilers[2].pk, boilers[3].pk], [boilers[4].pk]]
    assert all(label_events(d)[-1].data["after"]["tier"] == "gold" for d in boilers)


def test_bulk_update_statements_do_not_grow_with_the_batch_but_for_one_event_insert_per_device(
    db, django_assert_num_queries
):
    devices = [DeviceFactory(labels={"plant": "3", "old": "x"}) for _ in range(12)]

    # the room check; then the one batch (a savepoint in the test's transaction): the locking SELECT, the
    # labels, DELETE, upsert, revision UPDATE, and an event INSERT per changed device
    with django_assert_num_queries(1 + 2 + 5 + 12):
        devices_labels_update(selector="plant=3", set={"new": "1"}, remove=["old"], user=None, batch_size=100)

    assert {tuple(stored(d).items()) for d in devices} == {(("new", "1"), ("plant", "3"))}


def test_bulk_update_restricted_to_some_devices(db):
    picked, left = DeviceFactory(), DeviceFactory()

    result = devices_labels_update(selector=Selector(), set={"a": "1"}, remove=[], user=None, uuids=[picked.uuid])

    assert (result.matched, result.changed) == (1, 1)
    assert (stored(picked), stored(left)) == ({"a": "1"}, {})


def test_bulk_update_refuses_before_writing_when_a_device_would_have_too_many_labels(db):
    roomy = DeviceFactory(labels={"plant": "3"})
    crowded = DeviceFactory(name="crowded", labels={"plant": "3"} | {f"k{n}": "" for n in range(62)})

    with pytest.raises(ValidationError, match="would leave more on: crowded"):
        devices_labels_update(selector="plant=3", set={"a": "1", "b": "2"}, remove=[], user=None, batch_size=1)

    assert stored(roomy) == {"plant": "3"}
    assert len(stored(crowded)) == 63
    # replacing a key it has already takes no room
    devices_labels_update(selector="plant=3", set={"plant": "4", "a": "1"}, remove=["k0"], user=None)
    assert len(stored(crowded)) == 63


def test_bulk_update_refuses_a_bad_selector(db):
    with pytest.raises(ValueError, match="Invalid selector"):
        devices_labels_update(selector="plant in (3", set={}, remove=[], user=None)


# -- reading ------------------------------------------------------------------------------------------------------


def test_labels_of_reads_devices_or_a_queryset_in_one_query(db, django_assert_num_queries):
    a = DeviceFactory(labels={"role": "boiler", "plant": "3"})
    b = DeviceFactory()
    c = DeviceFactory(labels={"x": ""})

    with django_assert_num_queries(1):
        assert labels_of([a, b]) == {a.pk: {"plant": "3", "role": "boiler"}, b.pk: {}}
    with django_assert_num_queries(1):
        assert labels_of(Device.objects.all()) == {a.pk: {"plant": "3", "role": "boiler"}, b.pk: {}, c.pk: {"x": ""}}
    with django_assert_num_queries(0):
        assert labels_of([]) == {}


def test_q_filters_any_model_through_its_device_column(db, superuser):
    from reconciliation.services.sensors import sensor_create

    boiler = DeviceFactory(labels={"role": "boiler"})
    pump = DeviceFactory(labels={"role": "pump"})
    for device in (boiler, pump):
        sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(), user=superuser)

    rows = DeviceSensor.objects.filter(Selector.parse("role=boiler").q("device_id"))

    assert [row.device_id for row in rows] == [boiler.pk]


@pytest.fixture
def eight_devices(db):
    return [DeviceFactory() for _ in range(8)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(label_sets, min_size=8, max_size=8), st.lists(selectors(), min_size=1, max_size=8))
def test_q_and_matches_agree(eight_devices, labels, drawn):
    """On random label sets and selectors, the SQL filter selects exactly the devices ``matches`` accepts (each
    example rolls its labels back)."""
    with transaction.atomic():
        DeviceLabel.objects.bulk_create(
            DeviceLabel(device=device, key=key, value=value)
            for device, device_labels in zip(eight_devices, labels, strict=True)
            for key, value in device_labels.items()
        )
        for selector, _ in drawn:
            expected = {d.pk for d, ls in zip(eight_devices, labels, strict=True) if selector.matches(ls)}
            assert set(Device.objects.filter(selector.q()).values_list("pk", flat=True)) == expected, str(selector)
        transaction.set_rollback(True)


# -- provisioning keys ---------------------------------------------------------------------------------------------


def test_the_command_creates_a_key_whose_devices_start_with_its_labels(
    db, capsys, announced, django_capture_on_commit_callbacks
):
    call_command("create_provisioning_key", "plant 3", "--label", "plant=3", "--label", "site=north", "--json")
    created = json.loads(capsys.readouterr().out)
    assert created["defaultLabels"] == {"plant": "3", "site": "north"}
    request = registration_parse({"uuid": str(uuid.uuid4()), "deviceApiKey": secrets.token_hex(32)})

    with django_capture_on_commit_callbacks(execute=True):
        registered = device_register(provisioning_key=created["key"], request=request)

    assert stored(registered.device) == {"plant": "3", "site": "north"}
    assert announced == [[registered.device.pk]]
    with pytest.raises(CommandError, match="is not KEY=VALUE"):
        call_command("create_provisioning_key", "bad", "--label", "plant")
    with pytest.raises(CommandError, match="The label value 'a b'"):
        call_command("create_provisioning_key", "bad", "--label", "plant=a b")
