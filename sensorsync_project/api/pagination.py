from base64 import b64decode, b64encode
from urllib import parse

from django.core.exceptions import ValidationError
from rest_framework.pagination import Cursor, CursorPagination, LimitOffsetPagination
from rest_framework.utils.urls import replace_query_param


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
    """For lists that grow with the fleet: no COUNT(*) and no OFFSET, stable under concurrent inserts.

    A cursor names the ordering it was issued for, and is read strictly: anything but a cursor this list issued
    (garbage, another list's cursor, a hand-made position) is a 400 naming ``cursor``. DRF's own reading lets a
    position of the wrong type reach the query (a 500) and takes a cursor of another ordering as a real position
    (a wrong page, silently). An empty ``cursor`` is the first page, as it always was.
    """

    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering = "id"
    # The cursors issued here are ~30 characters; anything much longer is not one of them.
    max_cursor_length = 256
    cursor_query_description = "Opaque: take it from a page's next or previous link (anything else is a 400)."
    page_size_query_description = "Rows per page: default 100, at most 1000 (a larger value is capped)."
    invalid_cursor_message = "Invalid cursor: follow the next/previous links of this list."

    def get_page_size(self, request):
        size = _non_negative(request, self.page_size_query_param, minimum=1)
        return self.page_size if size is None else min(size, self.max_page_size)

    def paginate_queryset(self, queryset, request, view=None):
        self._model = queryset.model  # decode_cursor checks the position against the ordering field's type
        return super().paginate_queryset(queryset, request, view)

    def _ordering_tag(self) -> str:
        # A tuple once paginate_queryset ran; the class attribute's string when a cursor is made without a request.
        return self.ordering if isinstance(self.ordering, str) else ",".join(self.ordering)

    def _invalid_cursor(self) -> ValidationError:
        return ValidationError({self.cursor_query_param: [self.invalid_cursor_message]})

    def encode_cursor(self, cursor):
        tokens = {"s": self._ordering_tag()}
        if cursor.offset:
            tokens["o"] = str(cursor.offset)
        if cursor.reverse:
            tokens["r"] = "1"
        if cursor.position is not None:
            tokens["p"] = cursor.position
        encoded = b64encode(parse.urlencode(tokens).encode("ascii")).decode("ascii")
        assert self.base_url is not None  # set by paginate_queryset (or by whoever encodes a cursor without one)
        return replace_query_param(self.base_url, self.cursor_query_param, encoded)

    def decode_cursor(self, request):
        encoded = request.query_params.get(self.cursor_query_param)
        if not encoded:
            return None
        if len(encoded) > self.max_cursor_length:
            raise self._invalid_cursor()
        try:
            text = b64decode(encoded.encode("ascii"), validate=True).decode("ascii")
            tokens = parse.parse_qs(text, keep_blank_values=True, strict_parsing=True, max_num_fields=4)
        except ValueError as exc:  # binascii.Error and UnicodeError are ValueErrors
            raise self._invalid_cursor() from exc
        if set(tokens) - {"s", "o", "r", "p"} or any(len(values) != 1 for values in tokens.values()):
            raise self._invalid_cursor()
        token = {name: values[0] for name, values in tokens.items()}
        offset, reverse, position = token.get("o", "0"), token.get("r", "0"), token.get("p")
        if (
            token.get("s") != self._ordering_tag()
            or not (offset.isdigit() and len(offset) <= 6 and int(offset) <= self.offset_cutoff)
            or reverse not in ("0", "1")
        ):
            raise self._invalid_cursor()
        if position is not None:
            position = self._position_clean(position)
        # A position is the ordering field's value as text, as DRF makes it; its stubs type it as an int.
        return Cursor(offset=int(offset), reverse=reverse == "1", position=position)  # type: ignore[arg-type]

    def _position_clean(self, position: str) -> str:
        """The position as the ordering field reads it, so a value of the wrong type or beyond the column's range
        never reaches the query."""
        field = self._model._meta.get_field(self.ordering[0].lstrip("-"))
        try:
            value = field.to_python(position)
            field.run_validators(value)
        except ValidationError as exc:
            raise self._invalid_cursor() from exc
        return str(value)


class EventCursorPagination(FleetCursorPagination):
    """Newest first; the id is the insertion order, so pages stay stable while events are appended.

    An event's data can be a whole target config (hundreds of KB), so a page is bounded twice: at most
    ``max_page_size`` events, and in a list an event's data is inline only up to ``data_inline_max_bytes``
    (larger: ``data`` null, ``dataTruncated`` true, the whole event at ``events/<id>``). A page is then at most
    200 x (8 KiB + ~1 KiB of the other fields), under 2 MB.
    """

    ordering = "-id"
    max_page_size = 200
    data_inline_max_bytes = 8 * 1024
    page_size_query_description = "Events per page: default 100, at most 200 (a larger value is capped)."
