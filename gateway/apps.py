from django.apps import AppConfig


class GatewayConfig(AppConfig):
    """The Anthropic-compatible endpoint (``gateway.app``) and the ``serve`` command: the top of
    the house — it calls into ``queueing``, ``llm_calls`` and ``usage``, and nothing calls it."""

    name = "gateway"
    verbose_name = "Anthropic-compatible endpoint"
