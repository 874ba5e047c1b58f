from argparse import ArgumentParser
from typing import Any

import uvicorn
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Serve the pages, the JSON API and the Anthropic-compatible endpoint (/v1/…) on one "
        "host with uvicorn. Workers run separately: manage.py llm_worker."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Interface (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="Port (default 8000).")
        parser.add_argument(
            "--workers", type=int, default=1, help="Server processes sharing the port (default 1)."
        )
        parser.add_argument(
            "--log-level", default="warning", help="uvicorn's log level (default warning)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 <= options["port"] <= 65535:
            raise CommandError(f"--port must be 0-65535, got {options['port']}")
        if options["workers"] < 1:
            raise CommandError(f"--workers must be at least 1, got {options['workers']}")
        uvicorn.run(
            "ratelimit_project.asgi:application",
            host=options["host"],
            port=options["port"],
            workers=options["workers"],
            # Django's ASGI handler does not speak the lifespan protocol.
            lifespan="off",
            log_level=options["log_level"],
            # Our own pings keep waiting streams alive; idle keep-alive sockets are closed.
            timeout_keep_alive=30,
        )
