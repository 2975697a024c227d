"""Shared plumbing of the benchmark scripts: Django setup on SQLite or PostgreSQL, an
out-of-process sandbox, machine facts and the figures' printing.

Every script takes ``--db sqlite|postgres``. SQLite is a file under ``BENCH_DIR``
(default /tmp/django-klaviyo-bench); PostgreSQL is ``BENCH_PG_URL`` (default
postgres://postgres:postgres@127.0.0.1:5432/django_klaviyo_bench), created if missing.
Every script also takes ``--smoke`` (or BENCH_SMOKE=1): tiny sizes, to check it still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(os.environ.get("BENCH_DIR", "/tmp/django-klaviyo-bench"))
PG_URL = os.environ.get(
    "BENCH_PG_URL", "postgres://postgres:postgres@127.0.0.1:5432/django_klaviyo_bench"
)


# Smoke mode (``--smoke`` or BENCH_SMOKE=1): every script at tiny sizes, in seconds, so CI
# (tests/run.sh) runs them all and a schema or API change breaks the build, not the next
# measurement. Its figures mean nothing.
SMOKE = os.environ.get("BENCH_SMOKE", "") not in ("", "0")


def parse_bench_args(parser: argparse.ArgumentParser) -> Any:
    """``parser.parse_args()`` with ``--smoke`` added, which turns smoke mode on."""
    global SMOKE
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes, seconds: checks the script runs"
    )
    args = parser.parse_args()
    if args.smoke:
        SMOKE = True
        os.environ["BENCH_SMOKE"] = "1"  # child processes (workers, sandboxes) too
    return args


def sized(full: Any, smoke: Any) -> Any:
    """``full`` normally, ``smoke`` in smoke mode (read at call time, after parsing)."""
    return smoke if SMOKE else full


def default_sizes(args: Any, **sizes: tuple[Any, Any]) -> Any:
    """Fills each option left unset (None) with ``sized(full, smoke)``: ``name=(full, smoke)``."""
    for name, (full, smoke) in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, sized(full, smoke))
    return args


def parse_args(description: str, *, dbs: tuple[str, ...] = ("sqlite", "postgres")) -> Any:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--db", choices=dbs, default=dbs[0])
    return parse_bench_args(parser)


def insert_select_sql(model: Any, expressions: dict[str, str], tail: str = "") -> tuple[str, dict]:
    """``INSERT INTO <model's table> (<every concrete column>) SELECT ... <tail>``.

    ``expressions`` gives SQL for some columns (by column name); every other column gets the
    value a new instance would save (its default, ``auto_now``'s now, '' or NULL) as a
    parameter, so a column added to the model later fills itself instead of failing the
    benchmark on NOT NULL. Auto-increment keys are left to the database; a primary key or
    unique column without an expression is refused unless it saves NULL (one value for
    every row would collide).
    The SQL takes named parameters (``%(name)s``; write ``%%`` for a literal %): pass the
    returned dict, updated with the ones ``expressions`` and ``tail`` use.
    """
    from django.db import connection
    from django.db.models import AutoField, BigAutoField, SmallAutoField

    blank = model()
    columns, values, params = [], [], {}
    for field in model._meta.concrete_fields:
        if field.column in expressions:
            columns.append(field.column)
            values.append(expressions[field.column])
        elif isinstance(field, (AutoField, BigAutoField, SmallAutoField)):
            continue
        else:
            value = field.get_db_prep_save(field.pre_save(blank, add=True), connection)
            if value is None and not field.null:
                raise ValueError(f"{model.__name__}.{field.name} is NOT NULL without a default")
            if value is not None and (field.primary_key or field.unique):
                raise ValueError(f"{model.__name__}.{field.name} is unique: give an expression")
            columns.append(field.column)
            values.append(f"%(default_{field.column})s")
            params[f"default_{field.column}"] = value
    unknown = set(expressions) - set(columns)
    if unknown:
        raise ValueError(f"{model.__name__} has no column {', '.join(sorted(unknown))}")
    sql = (
        f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) "
        f"SELECT {', '.join(values)} {tail}"
    )
    return sql, params


def _ensure_pg_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres", scheme="postgresql"))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(db: str, *, fresh: bool = True) -> None:
    """Configure Django for ``db`` and migrate; ``fresh`` starts from an empty outbox."""
    sys.path[:0] = [str(ROOT), str(ROOT / "example_project")]
    if db == "sqlite":
        BENCH_DIR.mkdir(parents=True, exist_ok=True)
        path = BENCH_DIR / "bench.sqlite3"
        if fresh:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    else:
        _ensure_pg_database(PG_URL)
        url = PG_URL
    os.environ["BENCH_DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if fresh:
        truncate()


def truncate() -> None:
    from django.db import connection
    from shop.models import Order, OrderLine

    from django_klaviyo.models import OutboxEvent

    tables = [m._meta.db_table for m in (OrderLine, Order, OutboxEvent)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")


def machine_facts() -> dict[str, str]:
    facts = {
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": _memory(),
        "python": platform.python_version(),
        "load_average": f"{os.getloadavg()[0]:.2f}",
    }
    try:
        import django
        from django.conf import settings
        from django.db import connection

        if not settings.configured:
            return facts  # a benchmark without a database

        facts["django"] = django.get_version()
        facts["database"] = connection.vendor
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                facts["postgresql"] = cursor.fetchone()[0]
        else:
            import sqlite3

            facts["sqlite"] = sqlite3.sqlite_version
    except Exception as exc:  # facts are informative; never fail a benchmark on them
        facts["database"] = f"unknown ({exc})"
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def print_header(title: str) -> None:
    print(f"\n== {title}")
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine_facts().items()))


def print_result(name: str, **figures: Any) -> None:
    """One machine-readable line per result (``RESULT {...}``) plus a readable one."""
    shown = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"{name}: {shown}")
    print("RESULT " + json.dumps({"name": name, **figures}))


def median(values: list[float]) -> float:
    return statistics.median(values)


@contextmanager
def sandbox_process(**options: Any) -> Iterator[str]:
    """A SandboxServer in its own process (so its CPU is not the flusher's); yields its URL."""
    code = (
        "import json, sys\n"
        "from django_klaviyo.testing.sandbox import SandboxServer\n"
        "server = SandboxServer(**json.loads(sys.argv[1])).start()\n"
        "print(server.url, flush=True)\n"
        "server.serve_until_stopped()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(options)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        url = _read_line(proc.stdout, timeout=60).strip()
        if not url.startswith("http"):
            raise RuntimeError("the sandbox did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _read_line(stream: Any, *, timeout: float) -> str:
    # The child prints its URL in one flushed write, so once the pipe is readable a
    # readline() returns at once; a sandbox that never starts fails here, not hangs.
    readable, _, _ = select.select([stream], [], [], timeout)
    if not readable:
        raise RuntimeError(f"the sandbox printed nothing within {timeout:.0f} s")
    return stream.readline()


def sandbox_state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/__sandbox__/state", timeout=30) as response:
        return json.loads(response.read())


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def count_events(document: Any) -> int:
    """Events in a bulk-event request body: its ``{"type": "event"}`` resources."""
    if isinstance(document, dict):
        own = 1 if document.get("type") == "event" else 0
        return own + sum(count_events(v) for v in document.values())
    if isinstance(document, list):
        return sum(count_events(v) for v in document)
    return 0


def seed_placed_orders(count: int, prefix: str, *, spread: float = 0.0) -> None:
    """Placed Order rows as the outbox writer stores them, due from now over ``spread`` s."""
    from django.utils import timezone

    from django_klaviyo.models import OutboxEvent

    now = timezone.now()
    batch = []
    for i in range(count):
        email = f"customer{i % 5000}@example.com"
        due = now + timedelta(seconds=spread * i / max(count - 1, 1))
        batch.append(
            OutboxEvent(
                kind="event",
                payload={
                    "metric": "Placed Order",
                    "profile": {"email": email},
                    "properties": {"OrderId": f"{prefix}-{i}"},
                    "time": due.isoformat(),
                    "value": 10.0,
                    "value_currency": "USD",
                },
                metric="Placed Order",
                unique_id=f"{prefix}-{i}",
                profile_key=f"email:{email}",
                next_attempt_at=due,
                created_at=due,
            )
        )
        if len(batch) == 5000:
            OutboxEvent.objects.bulk_create(batch)
            batch = []
    if batch:
        OutboxEvent.objects.bulk_create(batch)
