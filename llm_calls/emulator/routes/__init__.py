"""The emulator's routes, one module per API area (messages, batches, models, the Admin API's
usage and cost reports, control); ``add_routes`` mounts them all."""

from __future__ import annotations

from aiohttp import web

from . import batches, control, messages, models, reports


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/v1/messages", messages.handle_messages)
    router.add_post("/v1/messages/count_tokens", messages.handle_count_tokens)
    router.add_post("/v1/messages/batches", batches.handle_batch_create)
    router.add_get("/v1/messages/batches", batches.handle_batch_list)
    router.add_get("/v1/messages/batches/{batch_id}", batches.handle_batch_get)
    router.add_delete("/v1/messages/batches/{batch_id}", batches.handle_batch_delete)
    router.add_post("/v1/messages/batches/{batch_id}/cancel", batches.handle_batch_cancel)
    router.add_get("/v1/messages/batches/{batch_id}/results", batches.handle_batch_results)
    router.add_get("/v1/models", models.handle_model_list)
    router.add_get("/v1/models/{model_id}", models.handle_model_get)
    router.add_get("/v1/organizations/usage_report/messages", reports.handle_usage_report)
    router.add_get("/v1/organizations/cost_report", reports.handle_cost_report)
    router.add_get("/_emulator/health", control.handle_health)
    router.add_get("/_emulator/ledger", control.handle_ledger)
    router.add_get("/_emulator/log", control.handle_log)
    router.add_get("/_emulator/stats", control.handle_stats)
    router.add_post("/_emulator/reset", control.handle_reset)
    router.add_get("/_emulator/config", control.handle_config_get)
    router.add_post("/_emulator/config", control.handle_config_set)
    router.add_post("/_emulator/clock", control.handle_clock)
    router.add_post("/_emulator/api_key_id", control.handle_api_key_id)
