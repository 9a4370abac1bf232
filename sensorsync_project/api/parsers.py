from django.conf import settings
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser

from sensorsync_project.strict_json import JSONBodyError, strict_json_loads


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"


class StrictJSONParser(BaseParser):
    """DRF's JSON parser accepts duplicate keys (the last wins) and NaN, and reads bodies of any size (it reads
    the stream, past Django's DATA_UPLOAD_MAX_MEMORY_SIZE); this one refuses all three."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.SENSORSYNC_MAX_BODY_BYTES
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        try:
            return strict_json_loads(body)
        except JSONBodyError as exc:
            raise ParseError(str(exc)) from exc
