from __future__ import annotations

from django import forms

from llm_calls.catalog import DEFAULT_MODEL, callable_models
from queueing import conf


class SubmitForm(forms.Form):
    """The queue page's "ask Claude" form: one user message, queued like any API submission."""

    session_id = forms.CharField(max_length=128, initial="playground")
    model = forms.ChoiceField(choices=(), initial=DEFAULT_MODEL)
    priority = forms.ChoiceField(choices=(), initial="query")
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), max_length=200_000)
    # Each model's own cap is checked with the rest of the body (llm_calls.validation).
    max_tokens = forms.IntegerField(min_value=1, initial=512)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Current models first, then legacy and deprecated ones; retired ones cannot be called.
        order = {"active": 0, "legacy": 1, "deprecated": 2}
        models = sorted(callable_models().values(), key=lambda i: (order[i.status], i.model_id))
        self.fields["model"].choices = [  # type: ignore[attr-defined]
            (i.model_id, i.model_id if i.status == "active" else f"{i.model_id} ({i.status})")
            for i in models
            if not i.limited_availability
        ]
        self.fields["priority"].choices = [(p, p) for p in conf.priority_class_names()]  # type: ignore[attr-defined]
