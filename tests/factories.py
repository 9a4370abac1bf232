"""Factories. Devices are made through the real service, so each has its target state, history, first event
and an API key (``device.api_key``), exactly as a device created by staff would."""

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from devices.services import device_create, device_labels_set


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"staff{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    is_staff = True
    password = factory.django.Password("correct horse battery staple")

    @factory.post_generation
    def permissions(self, create, codenames, **kwargs):
        """``UserFactory(permissions=["sensors.view_devicesensor", ...])``"""
        if not create or not codenames:
            return
        for dotted in codenames:
            app_label, codename = dotted.split(".")
            self.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


class SensorPayloadFactory(factory.DictFactory):
    """A valid sensor object as a client sends it (SPEC section 3)."""

    name = factory.Sequence(lambda n: f"sensor-{n}")
    protocol = "modbus"
    enabled = True
    pollInterval = 5000  # wire name
    connection = factory.LazyFunction(lambda: {"host": "10.0.0.5", "port": 502, "unitId": 1})
    dataPoints = factory.LazyFunction(
        lambda: [{"name": "temperature", "address": 40001, "type": "float32", "unit": "C"}]
    )
    metadata = factory.LazyFunction(dict)


class DeviceFactory(factory.Factory):
    class Meta:
        model = dict  # built through the service below, not the ORM

    name = factory.Sequence(lambda n: f"device-{n}")
    description = ""
    is_active = True

    @classmethod
    def _create(cls, model_class, **kwargs):
        labels = kwargs.pop("labels", None)  # DeviceFactory(labels={"plant": "3"}): set through the label service
        created = device_create(**kwargs)
        device = created.device
        device.api_key = created.api_key
        if labels:
            device_labels_set(device_uuid=device.uuid, labels=labels, user=None)
        return device

    _build = _create
