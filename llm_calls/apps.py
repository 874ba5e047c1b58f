from django.apps import AppConfig


class LlmCallsConfig(AppConfig):
    name = "llm_calls"
    verbose_name = "Claude calls"

    def ready(self) -> None:
        from llm_calls import checks  # noqa: F401  (registers the endpoint's system checks)
