import json
import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ratelimit_project import loadtest
from ratelimit_project.loadtest import stack


class Command(BaseCommand):
    help = "Run one benchmark scenario; prints one JSON object as the last line of stdout."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("scenario", choices=loadtest.SCENARIOS)
        parser.add_argument("--json", dest="json_path", help="Also write the result JSON here.")
        parser.add_argument(
            "--chars-per-token",
            type=float,
            default=4.0,
            help="Passed to the emulator, to make the client's estimates wrong on purpose.",
        )
        parser.add_argument(
            "--duration", type=float, default=None, help="Seconds of load (scenario default)."
        )
        parser.add_argument(
            "--scale", type=float, default=1.0, help="Multiply the scenario's size."
        )
        parser.add_argument(
            "--redis-outage-s",
            dest="redis_outage_s",
            default=None,
            metavar="S[,S...]",
            help="faults: Redis outages with calls in flight, seconds each (default 8,30; 0: none).",
        )
        # Scenario-specific options are accepted as --opt key=value pairs.
        parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE")
        # A scenario's own flags (e.g. eta's --workload) come from its add_arguments hook. The
        # scenario is not known before parsing, so every hook adds its flags; argparse refuses
        # two scenarios spelling the same flag.
        for name in loadtest.SCENARIOS:
            loadtest.load(name).add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        if not stack.in_child():
            # A fresh process with its own VAR_DIR: its own database, never the developer's.
            code = stack.rerun_in_child(options["scenario"], sys.argv[1:])
            if code:
                raise CommandError(f"scenario {options['scenario']} exited with status {code}")
            return
        module = loadtest.load(options["scenario"])
        extra: dict[str, str] = {}
        for pair in options["opt"]:
            if "=" not in pair:
                raise CommandError(f"--opt expects KEY=VALUE, got {pair!r}")
            key, value = pair.split("=", 1)
            extra[key] = value
        options["extra"] = extra
        result = module.run(options)
        line = json.dumps(result, sort_keys=True)
        if options["json_path"]:
            Path(options["json_path"]).write_text(
                json.dumps(result, indent=2, sort_keys=True) + "\n"
            )
        sys.stdout.write(line + "\n")
