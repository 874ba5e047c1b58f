from django.apps import AppConfig


class LlmCallsConfig(AppConfig):
    name = "llm_calls"
    verbose_name = "Claude calls"
