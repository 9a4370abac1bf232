import pytest


@pytest.fixture(autouse=True)
def _liveness_written_on_every_request(settings):
    """These tests check that each request refreshes liveness; coalescing it (SENSORSYNC_LIVENESS_WRITE_SECONDS)
    is what test_query_counts and test_liveness check, with the setting they need."""
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 0
