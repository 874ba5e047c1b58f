"""The emulator's HTTP server (aiohttp): builds the app and serves it.

Everything runs on one asyncio event loop (see ``state.py`` for why that makes each state change
atomic); simulated latency is ``asyncio.sleep``, so hundreds of requests wait concurrently.
The routes live in ``routes/`` (messages and count_tokens, batches, models, the Admin API's
usage and cost reports, control), the shared HTTP plumbing in ``http_layer.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web

from .batches import rfc3339
from .config import EmulatorConfig
from .http_layer import MAX_BODY_BYTES, api_middleware
from .routes import add_routes
from .state import STATE_KEY, TASKS_KEY, EmulatorState


def build_app(config: EmulatorConfig) -> web.Application:
    app = web.Application(
        middlewares=[api_middleware], client_max_size=MAX_BODY_BYTES + 1024 * 1024
    )
    app[STATE_KEY] = EmulatorState(config)
    app[TASKS_KEY] = set()
    add_routes(app)
    return app


async def serve(
    config: EmulatorConfig, *, host: str, port: int, announce: Callable[[str], None]
) -> None:
    """Run until cancelled; ``announce`` gets the real base URL once the socket is bound."""
    app = build_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound_port = sockets[0].getsockname()[1] if sockets else port
    announce(f"http://{host}:{bound_port}")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def run_forever(
    config: EmulatorConfig, *, host: str, port: int, announce: Callable[[str], None]
) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, host=host, port=port, announce=announce))


__all__ = ["EmulatorState", "build_app", "rfc3339", "run_forever", "serve"]
