from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """Management URLs answer with and without a trailing slash (no redirect, which would drop a POST body)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"
