"""Fleet configuration: sensor templates, their assignments to the devices a label selector selects, per-device
overrides, and the rendering of each device's desired sensors from them. A layer above ``reconciliation``: it
writes targets through ``reconciliation.services.targets`` and hears from the layers below through their signals."""

from django.apps import AppConfig


class FleetconfigConfig(AppConfig):
    name = "fleetconfig"
    verbose_name = "Fleet configuration"

    def ready(self) -> None:
        from devices.signals import device_labels_changed
        from reconciliation.signals import desired_config_proposed

        from . import handlers

        device_labels_changed.connect(handlers.labels_changed_render, dispatch_uid="fleetconfig_labels_changed")
        desired_config_proposed.connect(handlers.desired_config_guard, dispatch_uid="fleetconfig_rendered_sensors")
