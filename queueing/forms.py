from __future__ import annotations

from django import forms

from llm_calls.catalog import DEFAULT_MODEL, known_models
from queueing import conf


class SubmitForm(forms.Form):
    """The queue page's "ask Claude" form: one user message, queued like any API submission."""

    session_id = forms.CharField(max_length=128, initial="playground")
    model = forms.ChoiceField(choices=(), initial=DEFAULT_MODEL)
    priority = forms.ChoiceField(choices=(), initial="query")
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), max_length=200_000)
    max_tokens = forms.IntegerField(min_value=1, max_value=64_000, initial=512)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["model"].choices = [(m, m) for m in sorted(known_models())]  # type: ignore[attr-defined]
        self.fields["priority"].choices = [(p, p) for p in conf.priority_class_names()]  # type: ignore[attr-defined]
