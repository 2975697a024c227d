"""The wheel and sdist a release would upload: built by ``python -m build``, accepted by
``twine check``, and carrying everything the app needs at run time."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_build_makes_a_wheel_and_sdist_that_twine_accepts(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=240,
    )
    (wheel,) = tmp_path.glob("*.whl")
    (sdist,) = tmp_path.glob("*.tar.gz")
    checked = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "django_klaviyo/py.typed",
        "django_klaviyo/migrations/0001_initial.py",
        "django_klaviyo/templates/admin/django_klaviyo/outboxevent/change_list.html",
        "django_klaviyo/testing/spec/klaviyo-openapi-2026-07-15.subset.json",
        "django_klaviyo/management/commands/klaviyo_flush.py",
    ):
        assert needed in names
    assert not any(name.startswith(("tests/", "example_project/")) for name in names)
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert any(name.endswith("/tests/run.sh") for name in members)
    assert any(name.endswith("/README.md") for name in members)
