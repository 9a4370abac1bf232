"""The API's URL conventions, shared by every app's ``api/urls.py``: an optional trailing slash, uuid lookups."""

from rest_framework.routers import SimpleRouter

# A device's (or a key's) uuid in a URL, in any case: the lookup of every route under ``devices/<uuid>``.
UUID_REGEX = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


class OptionalSlashRouter(SimpleRouter):
    """Management URLs answer with and without a trailing slash (no redirect, which would drop a POST body)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"
