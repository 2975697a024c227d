"""Nothing in the suite or in our long-running commands can leave a reader waiting forever.

- Commands that others read line by line (``klaviyo_sandbox``, ``klaviyo_flush --loop``)
  flush every line they write, so a supervisor or script reading a pipe sees it at once,
  with or without PYTHONUNBUFFERED (test_sandbox.py runs the real command through a pipe).
- The suite runs with a per-test timeout, so a hang fails with a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.core.management import call_command

from django_klaviyo.management.base import LongRunningCommand
from django_klaviyo.management.commands import klaviyo_flush, klaviyo_sandbox


class RecordingStream:
    """A stream that remembers the order of writes and flushes."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write(self, text: str) -> None:
        self.calls.append(f"write:{text}")

    def flush(self) -> None:
        self.calls.append("flush")

    def isatty(self) -> bool:
        return False


@pytest.mark.parametrize("module", [klaviyo_flush, klaviyo_sandbox])
def test_long_running_commands_flush_what_they_print(module) -> None:
    assert issubclass(module.Command, LongRunningCommand)


@pytest.mark.django_db
def test_every_line_of_klaviyo_flush_is_flushed_as_it_is_written() -> None:
    out = RecordingStream()
    call_command("klaviyo_flush", stdout=out, stderr=RecordingStream())
    writes = [i for i, call in enumerate(out.calls) if call.startswith("write:")]
    assert writes, out.calls
    for index in writes:
        assert out.calls[index + 1] == "flush", out.calls


def test_a_hanging_test_fails_with_a_timeout_instead_of_waiting_forever(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(
        textwrap.dedent(
            """
            import threading

            def test_waits_for_an_event_nobody_sets():
                threading.Event().wait()
            """
        )
    )
    # The same plugin and setting the suite uses; only the limit is shortened.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout=2", "."],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Timeout" in result.stdout + result.stderr


def test_the_suite_runs_with_a_per_test_timeout(pytestconfig: pytest.Config) -> None:
    assert float(pytestconfig.getini("timeout")) > 0
