import subprocess
import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from queueing import conf
from queueing.workers import WorkerHost


class Command(BaseCommand):
    help = (
        "Run a worker host: --threads Claude calls in flight per process, plus the dispatcher and "
        "the reaper. SIGTERM finishes in-flight calls before exiting."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--threads", type=int, default=64, help="Calls in flight per process (default 64)."
        )
        parser.add_argument(
            "--processes", type=int, default=1, help="Worker processes on this host (default 1)."
        )
        parser.add_argument(
            "--no-dispatch", action="store_true", help="Do not run a dispatcher in this host."
        )
        parser.add_argument("--burst", action="store_true", help="Exit when the queue is empty.")
        parser.add_argument(
            "--engine",
            choices=conf.WORKER_ENGINES,
            default=None,
            help="How calls are held: 'loop' (one event loop, the default) or 'threads' (a "
            "thread each). Default: GATEWAY_WORKER_ENGINE.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["threads"] < 1 or options["processes"] < 1:
            self.stderr.write("--threads and --processes must be at least 1")
            sys.exit(2)
        if options["processes"] > 1:
            self._run_children(options)
            return
        WorkerHost(
            threads=options["threads"],
            dispatch=not options["no_dispatch"],
            burst=options["burst"],
            engine=options["engine"],
        ).run()

    def _run_children(self, options: dict[str, Any]) -> None:
        argv = [sys.executable, sys.argv[0], "llm_worker", "--threads", str(options["threads"])]
        if options["no_dispatch"]:
            argv.append("--no-dispatch")
        if options["burst"]:
            argv.append("--burst")
        if options["engine"]:
            argv += ["--engine", options["engine"]]
        children = [subprocess.Popen(argv) for _ in range(options["processes"])]
        import signal

        def forward(signum: int, frame: Any) -> None:
            for child in children:
                child.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        codes = [child.wait() for child in children]
        sys.exit(max(codes))
