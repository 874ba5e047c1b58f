"""The Settings page's form: what a person may choose about how the pages are shown to them."""

from __future__ import annotations

from django import forms

from organizations.models import UserPreferences


class TimeZoneForm(forms.Form):
    # Free text with suggestions (the template's <datalist>) rather than a <select> of ~600
    # zones: people type "Europe/Paris"; organizations.services checks the name.
    time_zone = forms.CharField(
        label="Time zone",
        max_length=64,
        initial=UserPreferences.DEFAULT_TIME_ZONE,
        help_text="An IANA name such as UTC, Europe/Paris or America/New_York. Every date and "
        "time on these pages is shown in it, with its abbreviation.",
        widget=forms.TextInput(attrs={"list": "time-zones", "autocomplete": "off"}),
    )
