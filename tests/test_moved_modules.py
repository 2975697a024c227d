"""The finder that imports old dotted paths (``django_klaviyo.MOVED_MODULES``) in a fresh
interpreter, where nothing has imported ``importlib.util`` yet: the finder's own import of
it must not ask the finder again, without end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import sys
import django_klaviyo
sys.modules.pop("importlib.util", None)  # as in a bare `python -c`
from django_klaviyo.testing.sandbox import SandboxServer
import django_klaviyo.sandbox as old
assert old.SandboxServer is SandboxServer
print("imported")
"""


def test_old_and_new_paths_import_in_a_fresh_interpreter():
    result = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "imported"
