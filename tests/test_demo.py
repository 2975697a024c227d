"""example_project/demo.sh: never reports on a sandbox it did not start; ``--serve`` keeps
the sandbox and the example shop running with a demo admin user."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.processes import read_line

# The demo keeps its own database and files (example_project/var/), so a test command that
# runs SQLite and PostgreSQL side by side runs these once.
pytestmark = pytest.mark.demo

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "example_project" / "demo.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def demo_env(**extra: str) -> dict[str, str]:
    # The demo chooses its own settings and database, whatever the test run uses.
    skip = ("KLAVIYO_", "DATABASE_", "DJANGO_SETTINGS_MODULE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(VENV=sys.prefix, PYTHON=sys.executable, PYTHONUNBUFFERED="1", **extra)
    return env


def test_a_port_already_in_use_stops_the_demo_with_a_clear_error():
    with socket.socket() as someone_elses_server:
        someone_elses_server.bind(("127.0.0.1", 0))
        someone_elses_server.listen()
        port = someone_elses_server.getsockname()[1]
        result = subprocess.run(
            ["bash", str(DEMO)],
            env=demo_env(SANDBOX_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "SANDBOX_PORT=<port>" in result.stderr
    assert "== python environment" not in result.stdout  # refused before doing anything


def test_an_unknown_argument_is_refused():
    result = subprocess.run(
        ["bash", str(DEMO), "--bogus"], env=demo_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "usage:" in result.stderr


@pytest.mark.slow
def test_serve_keeps_the_shop_and_the_sandbox_running_with_a_demo_admin():
    sandbox_port, shop_port = free_port(), free_port()
    demo = subprocess.Popen(
        ["bash", str(DEMO), "--serve"],
        env=demo_env(
            SANDBOX_PORT=str(sandbox_port), SHOP_PORT=str(shop_port), CUSTOMERS="3", ORDERS="4"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        printed: dict[str, str] = {}
        while "sandbox page" not in printed:
            line = read_line(demo.stdout, timeout=240)
            assert line, f"demo.sh ended early (exit {demo.poll()})"
            name, sep, value = line.partition(": ")
            if sep and name in ("admin dashboard", "admin user", "sandbox page"):
                printed[name] = value.strip()
        dashboard = printed["admin dashboard"]
        assert dashboard == f"http://127.0.0.1:{shop_port}/admin/django_klaviyo/outboxevent/"
        user, password = re.fullmatch(r"(\S+) / password: (\S+)", printed["admin user"]).groups()

        sandbox_page = requests.get(printed["sandbox page"], timeout=10)
        assert sandbox_page.status_code == 200

        session = requests.Session()
        login_url = f"http://127.0.0.1:{shop_port}/admin/login/"
        session.get(login_url, timeout=10)
        answer = session.post(
            f"{login_url}?next=/admin/django_klaviyo/outboxevent/",
            data={
                "username": user,
                "password": password,
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
                "next": "/admin/django_klaviyo/outboxevent/",
            },
            headers={"Referer": login_url},
            timeout=30,
        )
        assert answer.status_code == 200
        assert 'id="klaviyo-dashboard"' in answer.text
        # The demo ran klaviyo_sync after its flush: the Marketing page has its figures.
        marketing = session.get(
            f"http://127.0.0.1:{shop_port}/admin/django_klaviyo/marketing/", timeout=30
        )
        assert marketing.status_code == 200
        assert 'data-report="revenue_by_day" data-state="fresh"' in marketing.text
        assert 'class="dk-chart' in marketing.text
        assert demo.poll() is None  # still serving
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=30)
    # The shell has ended; its children may still be closing their sockets on a loaded
    # machine, so wait (bounded) for both ports to stop answering.
    deadline = time.monotonic() + 60
    served = [sandbox_port, shop_port]
    while served and time.monotonic() < deadline:
        served = [port for port in served if port_answers(port)]
        if served:
            time.sleep(0.2)
    assert not served, f"ports {served} still served a minute after the demo ended"
