"""``manage.py klaviyo_sandbox``: run the local Klaviyo stand-in until SIGTERM/SIGINT.

Point the store at it with ``KLAVIYO = {"API_URL": "http://127.0.0.1:8765", ...}``.
"""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import CommandError, CommandParser

from django_klaviyo.management.base import LongRunningCommand
from django_klaviyo.testing.sandbox.faults import FaultConfig
from django_klaviyo.testing.sandbox.server import SandboxServer


def _share(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(value)
    return number


class Command(LongRunningCommand):
    help = "Run a local Klaviyo API sandbox (validating, rate-limited, with optional faults)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument(
            "--time-scale",
            type=float,
            default=1.0,
            help="Shrink rate-limit windows (0.1: the 60 s window lasts 6 s).",
        )
        parser.add_argument("--no-rate-limits", action="store_true")
        parser.add_argument(
            "--latency-ms", type=float, default=0.0, help="Delay added to every API request."
        )
        for name in ("429", "500", "503", "slow", "drop"):
            parser.add_argument(
                f"--fault-{name}",
                type=_share,
                default=0.0,
                metavar="SHARE",
                help=f"Share of requests answered with a {name} fault (0-1).",
            )
        parser.add_argument("--slow-seconds", type=float, default=35.0)
        parser.add_argument(
            "--process-probability",
            type=_share,
            default=0.5,
            help="Share of slow/dropped requests processed anyway.",
        )
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--record",
            metavar="FILE",
            default=None,
            help="Append accepted requests as JSON lines to FILE.",
        )
        parser.add_argument(
            "--api-key", default=None, help="Only accept this private key (default: accept any)."
        )
        parser.add_argument(
            "--job-seconds",
            type=float,
            default=0.0,
            metavar="S",
            help="How long each bulk job (profile import, catalog, coupon codes) stays "
            "'processing' before it completes, as Klaviyo's jobs take time (default: 0).",
        )
        parser.add_argument("--quiet", action="store_true", help="Do not log requests.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["time_scale"] <= 0:
            raise CommandError("--time-scale must be positive.")
        if not options["job_seconds"] >= 0:
            raise CommandError("--job-seconds must be 0 or more.")
        try:
            faults = FaultConfig(
                rate_429=options["fault_429"],
                rate_500=options["fault_500"],
                rate_503=options["fault_503"],
                rate_slow=options["fault_slow"],
                rate_drop=options["fault_drop"],
                slow_seconds=options["slow_seconds"],
                process_probability=options["process_probability"],
                seed=options["seed"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        server = SandboxServer(
            options["host"],
            options["port"],
            api_key=options["api_key"],
            time_scale=options["time_scale"],
            enforce_rate_limits=not options["no_rate_limits"],
            latency=options["latency_ms"] / 1000.0,
            faults=faults,
            record_path=options["record"],
            seed=options["seed"],
            verbose=not options["quiet"],
            job_seconds=options["job_seconds"],
        )
        try:
            server.start()
        except OSError as exc:
            raise CommandError(
                f"Cannot listen on {options['host']}:{options['port']}: {exc}"
            ) from None

        def stop(signum: int, frame: Any) -> None:
            server.stop()

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        self.stdout.write(f"Klaviyo sandbox listening on {server.url}")
        self.stdout.write(f"Overview: {server.url}/__sandbox__/  (Ctrl+C to stop)")
        try:
            server.serve_until_stopped()
        finally:
            server.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write("Klaviyo sandbox stopped.")
