"""The admin pages' part of the service rule: every write is a service call made from ``save_model`` (or an
action), and a service's refusal is shown on the form, like any invalid form, not as a server error."""

from django.contrib import admin
from django.core.exceptions import ValidationError

from devices.labels import Selector, SelectorError
from sensorsync_project.exceptions import PreconditionFailed, SensorNotFound, StateConflict


class ServiceRejected(Exception):
    """Raised from ``save_model`` when the service refused the write, carrying the service's error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


# What a service may refuse with, as opposed to a bug (which must stay a 500 with a traceback).
SERVICE_REJECTIONS = (ValidationError, PreconditionFailed, SensorNotFound, StateConflict)


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


class SelectorListFilter(admin.ListFilter):
    """A label selector typed into the change list's sidebar (``plant=3,role!=spare``): the rows whose device it
    selects. ``device_field`` names the model's device id (``pk`` on devices). A selector that does not parse
    lists nothing and says what is wrong."""

    title = "label selector"
    parameter_name = "selector"
    device_field = "pk"
    template = "admin/selector_filter.html"

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        value = params.pop(self.parameter_name, None)
        # Django hands list filters each parameter as a list of its values.
        self.text = (value[-1] if isinstance(value, list) else value or "").strip()
        self.error = ""
        self.selector = None
        if self.text:
            try:
                self.selector = Selector.parse(self.text)
            except SelectorError as exc:
                self.error = str(exc)
        # The other parameters of the list, kept as hidden fields of the filter's form.
        self.kept = [
            (key, item)
            for key, values in request.GET.lists()
            if key not in (self.parameter_name, "p")
            for item in values
        ]

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return [self.parameter_name]

    def choices(self, changelist):
        return []

    def queryset(self, request, queryset):
        if self.error:
            return queryset.none()
        if self.selector is None:
            return queryset
        return queryset.filter(self.selector.q(self.device_field))


class SensorSelectorListFilter(SelectorListFilter):
    device_field = "device_id"
