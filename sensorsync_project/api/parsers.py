from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from sensorsync_project.strict_json import JSONBodyError, strict_json_loads


class StrictJSONParser(BaseParser):
    """DRF's JSON parser accepts duplicate keys (the last wins) and NaN; this one refuses both with a 400."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return strict_json_loads(stream.read())
        except JSONBodyError as exc:
            raise ParseError(str(exc)) from exc
