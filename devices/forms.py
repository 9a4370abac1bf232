"""The admin forms of devices and provisioning keys. Their ``save`` is never what writes: the admin calls a
service in ``save_model`` (``sensorsync_project.ui.forms.ServiceModelForm`` is how its refusal reaches a field)."""

from typing import ClassVar

from sensorsync_project.ui.forms import ServiceModelForm

from .models import Device, ProvisioningKey


class DeviceAdminForm(ServiceModelForm):
    service_fields: ClassVar[dict[str, str]] = {"name": "name", "description": "description", "isActive": "is_active"}

    class Meta:
        model = Device
        fields = ("name", "description", "is_active")


class ProvisioningKeyAdminForm(ServiceModelForm):
    service_fields: ClassVar[dict[str, str]] = {"name": "name", "expiresAt": "expires_at", "maxDevices": "max_devices"}

    class Meta:
        model = ProvisioningKey
        fields = ("name", "expires_at", "max_devices")
