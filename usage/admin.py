"""Admin: the audit log is read-only (rows are facts); prices are editable (edits reach the
price cache at once); rollups are browsable, with a per-user summary page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from usage import selectors, services
from usage.forms import FilterError, parse_date_range
from usage.models import (
    AuditLog,
    ModelPrice,
    OrganizationUsageDaily,
    SessionUsage,
    UsageDaily,
    UserUsageDaily,
)
from usage.templatetags.usage_format import usd


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable by staff with view permission; nobody adds, edits or deletes here."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ModelFilter(admin.SimpleListFilter):
    """Models that have usage, read from the small organization rollup (a DISTINCT over a
    million audit rows would make every changelist slow)."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        models = (
            OrganizationUsageDaily.objects.order_by("model")
            .values_list("model", flat=True)
            .distinct()
        )
        return [(m, m) for m in models]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(model=value) if value else queryset


def _cost(obj: Any) -> str:
    return usd(obj.cost_usd)


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = (
        "occurred_at",
        "user",
        "organization",
        "session_id",
        "model",
        "outcome",
        "service_tier",
        "attempts",
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cost",
        "latency_ms",
        "price_missing",
    )
    list_filter = (
        "outcome",
        ModelFilter,
        "service_tier",
        "price_missing",
        ("occurred_at", admin.DateFieldListFilter),
    )
    search_fields = (
        "user__username",
        "=session_id",
        "=request_id",
        "=client_request_id",
    )
    list_select_related = ("user", "organization")
    show_full_result_count = False
    ordering = ("-occurred_at", "-id")
    readonly_fields = ("cost_usd", "uncached_cost_usd")

    @admin.display(description="cost", ordering="cost_pico_usd")
    def cost(self, obj: AuditLog) -> str:
        return _cost(obj)


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ("model", "effective_from", "input_usd_per_mtok", "output_usd_per_mtok")
    list_filter = ("model",)
    search_fields = ("model",)
    ordering = ("model", "-effective_from")
    actions = ("reprice_missing",)

    @admin.action(description="Re-price calls recorded without a price (all models)")
    def reprice_missing(self, request: HttpRequest, queryset: QuerySet[ModelPrice]) -> None:
        result = services.reprice_missing_calls()
        messages.info(
            request,
            f"Re-priced {result.repriced} call(s); {result.still_missing} still have no price.",
        )


class RollupAdmin(ReadOnlyAdmin):
    show_full_result_count = False

    @admin.display(description="cost", ordering="cost_pico_usd")
    def cost(self, obj: Any) -> str:
        return _cost(obj)


@admin.register(UsageDaily)
class UsageDailyAdmin(RollupAdmin):
    list_display = (
        "day",
        "user",
        "organization",
        "model",
        "requests",
        "errors",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cost",
    )
    list_filter = (("day", admin.DateFieldListFilter), "model")
    search_fields = ("user__username", "model")
    list_select_related = ("user", "organization")
    ordering = ("-day",)
    change_list_template = "admin/usage/usagedaily/change_list.html"

    def get_urls(self) -> list[Any]:
        extra = [
            path(
                "users/",
                self.admin_site.admin_view(self.user_summary_view),
                name="usage_usagedaily_users",
            )
        ]
        return extra + super().get_urls()

    def user_summary_view(self, request: HttpRequest) -> HttpResponse:
        """Per-user totals over a date range (the rollup grouped by user), top 100 by cost."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        error = ""
        try:
            date_range = parse_date_range(params=request.GET, today=timezone.now().date())
        except FilterError as exc:
            error = str(exc)
            today = timezone.now().date()
            date_range = parse_date_range(params={}, today=today)
        page = selectors.users_page(date_range=date_range, sort="cost")
        context = {
            **self.admin_site.each_context(request),
            "title": f"Usage per user, {date_range.start} – {date_range.end}",
            "opts": self.model._meta,
            "range": date_range,
            "error": error,
            "rows": [u.as_dict() for u in page.items],
            "dashboard_url": reverse("usage:users"),
        }
        return TemplateResponse(request, "admin/usage/user_summary.html", context)


@admin.register(UserUsageDaily)
class UserUsageDailyAdmin(RollupAdmin):
    list_display = ("day", "user", "requests", "errors", "cache_read_input_tokens", "cost")
    list_filter = (("day", admin.DateFieldListFilter),)
    search_fields = ("user__username",)
    list_select_related = ("user",)
    ordering = ("-day",)


@admin.register(SessionUsage)
class SessionUsageAdmin(RollupAdmin):
    list_display = (
        "session_id",
        "user",
        "first_at",
        "last_at",
        "requests",
        "errors",
        "cache_read_input_tokens",
        "cost",
    )
    search_fields = ("=session_id", "user__username")
    list_select_related = ("user",)
    ordering = ("-last_at",)


@admin.register(OrganizationUsageDaily)
class OrganizationUsageDailyAdmin(RollupAdmin):
    list_display = ("day", "organization", "model", "requests", "errors", "cost")
    list_filter = (("day", admin.DateFieldListFilter), "model")
    list_select_related = ("organization",)
    ordering = ("-day",)
