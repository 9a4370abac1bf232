from rest_framework.pagination import CursorPagination, LimitOffsetPagination


class StandardPagination(LimitOffsetPagination):
    """For lists that stay small (devices, one device's sensors): totals are useful and cheap there."""

    default_limit = 50
    max_limit = 500


class FleetCursorPagination(CursorPagination):
    """For lists that grow with the fleet: no COUNT(*) and no OFFSET, stable under concurrent inserts."""

    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering = "id"


class EventCursorPagination(FleetCursorPagination):
    """Newest first; the id is the insertion order, so pages stay stable while events are appended."""

    ordering = "-id"
