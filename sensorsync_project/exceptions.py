"""Domain errors raised by services and turned into HTTP answers by the API layer."""


class PreconditionFailed(Exception):
    """An ``If-Match`` did not match the current target state's ETag (HTTP 412)."""

    def __init__(self, current_etag: str) -> None:
        super().__init__(f"The target state has changed; its current ETag is {current_etag}.")
        self.current_etag = current_etag


def if_match_check(if_match: str | None, current_etag: str) -> None:
    """Strong comparison, as RFC 9110 asks of If-Match; absent means unconditional."""
    if if_match is None:
        return
    candidates = [tag.strip() for tag in if_match.split(",")]
    if "*" in candidates or current_etag in candidates:
        return
    raise PreconditionFailed(current_etag)


class SensorNotFound(LookupError):
    """No sensor of that name in the device's target configuration (HTTP 404)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"No sensor named '{name}' in this device's target configuration.")
        self.name = name


class StateConflict(Exception):
    """The request is valid but the resource's state does not allow it now (HTTP 409): deploying a device that has
    no draft, leaving draft mode with a draft undeployed. ``code`` is the error's stable name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
