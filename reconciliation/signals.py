from django.db.models.signals import post_save

from devices.models import DeviceCurrentState

from . import handlers

post_save.connect(handlers.current_state_saved, sender=DeviceCurrentState, dispatch_uid="reconcile_on_report")
