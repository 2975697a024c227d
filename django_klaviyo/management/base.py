"""A base for long-running commands whose output others read line by line.

``klaviyo_sandbox`` and ``klaviyo_flush --loop`` announce readiness and progress on stdout.
When stdout is a pipe (a supervisor, a script waiting for "listening on ...", a test),
Python block-buffers it unless PYTHONUNBUFFERED is set, so a reader would wait for a line
that is already written. These commands flush every line they write.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, OutputWrapper


class LineFlushedOutput(OutputWrapper):
    """An ``OutputWrapper`` that flushes after every write."""

    def write(self, msg: str = "", style_func: Any = None, ending: str | None = None) -> None:
        super().write(msg, style_func, ending)
        self.flush()


class LongRunningCommand(BaseCommand):
    """A ``BaseCommand`` whose stdout and stderr are flushed line by line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stdout = _line_flushed(self.stdout)
        self.stderr = _line_flushed(self.stderr)

    def execute(self, *args: Any, **options: Any) -> Any:
        # BaseCommand.execute would wrap these in a plain OutputWrapper; wrap them ourselves.
        if options.get("stdout"):
            self.stdout = LineFlushedOutput(options.pop("stdout"))
        if options.get("stderr"):
            self.stderr = LineFlushedOutput(options.pop("stderr"))
        return super().execute(*args, **options)


def _line_flushed(wrapper: OutputWrapper) -> LineFlushedOutput:
    flushed = LineFlushedOutput(wrapper._out, ending=wrapper.ending)
    flushed.style_func = wrapper.style_func
    return flushed
