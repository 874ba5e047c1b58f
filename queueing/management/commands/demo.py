import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ratelimit_project import demo


class Command(BaseCommand):
    help = (
        "The whole gateway on this machine: emulator, Redis, a worker host, the web server and "
        "60 s of traffic at twice the rate limit; then serves the dashboards until Ctrl-C. "
        "--stop stops a running demo from another terminal."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--duration", type=float, default=60.0, help="Seconds of traffic (default 60)."
        )
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="Exit once the traffic has drained (the web server runs only meanwhile).",
        )
        parser.add_argument(
            "--port",
            type=int,
            default=None,
            help="Web server port (default $DEMO_PORT or 8000; the next free one if taken).",
        )
        parser.add_argument(
            "--real",
            action="store_true",
            help=(
                "Call the real Anthropic API (needs ANTHROPIC_API_KEY): at most "
                f"{demo.REAL_MAX_REQUESTS} requests to {demo.REAL_MODEL}, max_tokens "
                f"{demo.REAL_MAX_TOKENS}."
            ),
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=demo.WORKER_THREADS,
            help="Threads of the worker host (default 64).",
        )
        parser.add_argument(
            "--stop", action="store_true", help="Stop a running demo and everything it started."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["stop"]:
            if not demo.demo_stop(out=sys.stdout):
                self.stdout.write("No demo is running.")
            return
        try:
            demo.demo_run(
                options=demo.DemoOptions(
                    duration_s=options["duration"],
                    serve=not options["no_serve"],
                    port=options["port"],
                    real=options["real"],
                    threads=options["threads"],
                ),
                # The raw stream: the live display redraws lines with escape codes, which
                # Django's OutputWrapper would break by appending newlines.
                out=sys.stdout,
            )
        except demo.DemoError as exc:
            raise CommandError(str(exc)) from None
