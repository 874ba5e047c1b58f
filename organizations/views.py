"""Settings: the page where a person chooses how the pages are shown to them."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from organizations import selectors, services
from organizations.forms import TimeZoneForm
from organizations.models import available_time_zones


@login_required
def user_settings(request: HttpRequest) -> HttpResponse:
    form = TimeZoneForm(
        request.POST or None, initial={"time_zone": selectors.time_zone_of(user=request.user)}
    )
    if request.method == "POST" and form.is_valid():
        try:
            saved = services.preferences_set_time_zone(
                user=request.user, time_zone=form.cleaned_data["time_zone"]
            )
        except ValidationError as exc:
            form.add_error("time_zone", exc.messages)
        else:
            messages.success(request, f"Times are now shown in {saved.time_zone}.")
            return redirect("settings")
    status = 400 if form.errors else 200
    return render(
        request,
        "organizations/settings.html",
        {"form": form, "time_zones": sorted(available_time_zones())},
        status=status,
    )
