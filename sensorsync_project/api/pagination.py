from django.core.exceptions import ValidationError
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination, LimitOffsetPagination


def _non_negative(request, name: str, *, minimum: int) -> int | None:
    """A paging parameter as sent, or None when absent; anything but a whole number >= minimum is a 400
    (DRF would silently fall back to its default and answer a page the client did not ask for)."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) < minimum:
        raise ValidationError({name: [f"Must be a whole number, at least {minimum}."]})
    return int(raw)


class StandardPagination(LimitOffsetPagination):
    """For lists that stay small (devices, one device's sensors): totals are useful and cheap there."""

    default_limit = 50
    max_limit = 500

    def get_limit(self, request):
        limit = _non_negative(request, self.limit_query_param, minimum=1)
        return self.default_limit if limit is None else min(limit, self.max_limit)

    def get_offset(self, request):
        return _non_negative(request, self.offset_query_param, minimum=0) or 0


class FleetCursorPagination(CursorPagination):
    """For lists that grow with the fleet: no COUNT(*) and no OFFSET, stable under concurrent inserts."""

    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering = "id"

    def get_page_size(self, request):
        size = _non_negative(request, self.page_size_query_param, minimum=1)
        return self.page_size if size is None else min(size, self.max_page_size)

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound as exc:  # DRF's answer to a cursor it cannot read: a bad parameter, not a missing page
            raise ValidationError({self.cursor_query_param: ["Invalid cursor: use the next/previous links."]}) from exc


class EventCursorPagination(FleetCursorPagination):
    """Newest first; the id is the insertion order, so pages stay stable while events are appended."""

    ordering = "-id"
