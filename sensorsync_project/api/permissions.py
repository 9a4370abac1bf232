from rest_framework.permissions import BasePermission

METHOD_VERBS = {
    "GET": "view",
    "HEAD": "view",
    "OPTIONS": "view",
    "POST": "add",
    "PUT": "change",
    "PATCH": "change",
    "DELETE": "delete",
}


class StaffModelPermissions(BasePermission):
    """Django model permissions, with reads needing ``view_<model>`` (DRF's own class lets any user read).

    A view may name another model or verb for an action with ``permission_for(request) -> (model, verb)``.
    """

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        if hasattr(view, "permission_for"):
            model, verb = view.permission_for(request)
        else:
            model, verb = view.queryset.model, None
        verb = verb or METHOD_VERBS.get(request.method)
        if verb is None:
            return False
        return user.has_perm(f"{model._meta.app_label}.{verb}_{model._meta.model_name}")
