"""docs/deployment.md stays true to the code: every command line it gives parses with that
command's own argument parser, every environment variable it sets is one the settings read, and
its example ``REDIS_URL`` (a Sentinel URL) is one the project accepts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from django.core.management import CommandError, get_commands, load_command_class

from ratelimit_project.redis import check_url, parse_sentinel_url

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "deployment.md").read_text()
SETTINGS = (ROOT / "ratelimit_project" / "settings.py").read_text()

# "manage.py <command> <args>" up to the end of the line, a closing backtick or quote.
COMMAND_LINE = re.compile(r"manage\.py ([a-z_]+)([^`'\n|]*)")


def _command_lines() -> list[tuple[str, str]]:
    return sorted({(m.group(1), m.group(2).strip()) for m in COMMAND_LINE.finditer(DOC)})


@pytest.mark.parametrize(("name", "args"), _command_lines(), ids=lambda v: v or "-")
def test_every_documented_command_line_parses(name: str, args: str) -> None:
    commands = get_commands()
    assert name in commands, f"docs/deployment.md runs manage.py {name}, which does not exist"
    # Shell that systemd or a Procfile would expand: a port and a date.
    args = args.replace("$PORT", "8000").replace("$(date +%%Y%%m%%d)", "20270101")
    parser = load_command_class(commands[name], name).create_parser("manage.py", name)
    try:
        parser.parse_args(shlex.split(args, comments=True))
    except (SystemExit, CommandError) as exc:
        raise AssertionError(f"manage.py {name} {args}: the parser refused it") from exc


def test_the_documented_environment_is_read_by_the_settings() -> None:
    block = DOC.split("`/etc/gateway/env`", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    names = [line.split("=", 1)[0] for line in block.splitlines() if "=" in line]
    assert "REDIS_URL" in names and "DATABASE_URL" in names
    for name in names + ["DB_CONN_MAX_AGE", "DB_DISABLE_SERVER_SIDE_CURSORS"]:
        assert f'"{name}"' in SETTINGS, f"{name} is documented but settings.py never reads it"


def test_the_documented_sentinel_urls_are_accepted() -> None:
    urls = re.findall(r"REDIS_URL=(redis\+sentinel://\S+)", DOC)
    assert len(urls) >= 2
    for url in urls:
        check_url(url)
        assert len(parse_sentinel_url(url).sentinels) == 3
