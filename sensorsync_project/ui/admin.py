"""The admin pages' part of the service rule: every write is a service call made from ``save_model`` (or an
action), and a service's refusal is shown on the form, like any invalid form, not as a server error."""

from django.contrib import admin
from django.core.exceptions import ValidationError

from sensorsync_project.exceptions import PreconditionFailed, SensorNotFound


class ServiceRejected(Exception):
    """Raised from ``save_model`` when the service refused the write, carrying the service's error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


# What a service may refuse with, as opposed to a bug (which must stay a 500 with a traceback).
SERVICE_REJECTIONS = (ValidationError, PreconditionFailed, SensorNotFound)


class ServiceAdminMixin(admin.ModelAdmin):
    """For admins whose ``save_model`` calls a service: a refusal is shown on the form, not as a server error.

    The service validates at write time, after the form did, so its ``ValidationError`` cannot simply be added
    to the form from ``save_model``. Instead the refusal aborts the request's transaction (nothing is written),
    and the same POST is validated once more with the refusal bound to the form class, whose ``clean`` puts each
    message on the field it names (``sensorsync_project.ui.forms.ServiceModelForm``). The admin then renders it
    like any invalid form.
    """

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceRejected as rejected:
            request.service_rejection = rejected.error
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        rejection = getattr(request, "service_rejection", None)
        if rejection is None:
            return form
        return type(form.__name__, (form,), {"service_rejection": rejection})

    @staticmethod
    def adopt(obj, saved) -> None:
        """Make the admin's in-memory object the row the service wrote (for the log entry and the redirect)."""
        obj.pk = saved.pk
        obj.refresh_from_db()
        obj._state.adding = False
