"""``manage.py drift_report | head``: when the reader leaves early, a command stops quietly, without a traceback."""

import errno
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import load_command_class
from django.core.management.base import OutputWrapper

ROOT = Path(__file__).resolve().parents[2]


class ClosedPipe(StringIO):
    """What stdout becomes once ``head`` has read its lines and exited."""

    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_a_reader_that_leaves_mid_output_ends_the_command_with_status_1_and_no_traceback(fleet, monkeypatch):
    # run_from_argv closes every connection when it ends; keep the test's transaction open.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)
    command = load_command_class("reconciliation", "drift_report")
    err = StringIO()
    command.stdout, command.stderr = OutputWrapper(ClosedPipe()), OutputWrapper(err)

    with pytest.raises(SystemExit) as exc:
        command.run_from_argv(["manage.py", "drift_report"])

    assert exc.value.code == 1
    assert err.getvalue() == ""


def test_output_left_in_the_buffer_for_a_closed_pipe_keeps_the_exit_status_and_stderr_clean():
    """End to end: buffered output that only reaches the closed pipe when Python flushes it at exit (the case that
    printed "Exception ignored ... BrokenPipeError" and exited 120)."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    env |= {"DJANGO_SETTINGS_MODULE": "sensorsync_project.settings_test", "DATABASE_URL": "sqlite://:memory:"}
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes anything
    try:
        result = subprocess.run(
            [sys.executable, "manage.py", "reconcile", "--help"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)

    assert (result.returncode, result.stderr) == (0, "")
