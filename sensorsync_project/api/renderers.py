import orjson
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder


class FastJSONRenderer(JSONRenderer):
    """DRF's JSON output through orjson: the stdlib encoder was ~2 ms of a 100-row sensor page.

    Types orjson does not know (lazy translations, Decimal, ...) go through DRF's own encoder."""

    _fallback = JSONEncoder().default

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        return orjson.dumps(data, default=self._fallback)
