import threading

import pytest
from django.db import connection
from django.test import Client

from tests.factories import UserFactory
from tests.helpers import token_for


@pytest.fixture
def staff_token(db) -> str:
    return token_for(UserFactory(username="reliability-admin", is_superuser=True))


def run_parallel(calls: list, *, timeout: float = 120.0) -> list:
    """Run every ``call(client)`` at once, one thread and one database connection each (closed at the end);
    returns each call's result, or ("exception", repr) for a call that raised."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index: int, call) -> None:
        try:
            client = Client(raise_request_exception=False)
            barrier.wait(timeout=30)
            results[index] = call(client)
        except Exception as exc:  # reported by the caller's assertions
            results[index] = ("exception", repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call), daemon=True) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a request never finished"
    return results
