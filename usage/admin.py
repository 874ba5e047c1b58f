"""Admin: the audit log is read-only (rows are facts); prices are editable with their bands
(checked: no negative rate, no overlapping date ranges; edits reach the price cache at once and
re-price unpriced calls once saved); rollups are browsable, with a per-user summary page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from usage import selectors, services
from usage.forms import FilterError, parse_date_range
from usage.models import (
    RATE_FIELDS,
    AuditLog,
    AuditLogPrune,
    ModelPrice,
    OrganizationUsageDaily,
    PriceBand,
    ReconciliationRun,
    SessionUsage,
    Speed,
    UnpricedModel,
    UsageDaily,
    UserUsageDaily,
)
from usage.templatetags.usage_format import num, usd, when


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


def _column(field: str, *, money: bool = False) -> Callable[[Any], str]:
    """A changelist column printing ``field`` as the pages do — ``$1,234.5678`` for money,
    ``1,234,567`` for counts — still sortable by the field. Django's own column would print a
    price at the field's 12 decimals and counts without separators."""

    @admin.display(description=field.replace("_", " "), ordering=field)
    def show(obj: Any) -> str:
        value = getattr(obj, field)
        if value is None:
            return "-"
        return usd(value) if money else num(value)

    show.__name__ = field
    return show


def _counts(*fields: str) -> tuple[Callable[[Any], str], ...]:
    return tuple(_column(f) for f in fields)


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
        *_counts(
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "web_search_requests",
        ),
        "speed",
        "inference_geo",
        "cost",
        _column("latency_ms"),
        "price_missing",
    )
    list_filter = (
        "outcome",
        ModelFilter,
        "service_tier",
        "speed",
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


class PriceBandInline(admin.TabularInline):
    model = PriceBand
    extra = 0
    fields = ("above_prompt_tokens", *RATE_FIELDS)
    verbose_name = "price band (prompts longer than the threshold: every token at these rates)"
    verbose_name_plural = "price bands"


class ModelPriceForm(forms.ModelForm):
    class Meta:
        model = ModelPrice
        fields = (
            "model",
            "speed",
            "effective_from",
            "effective_until",
            *RATE_FIELDS,
            "web_search_usd_per_1k",
            "note",
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        start = cleaned.get("effective_from")
        if start is None or not cleaned.get("model"):
            return cleaned  # the field's own error says what is missing
        candidate = ModelPrice(
            pk=self.instance.pk,
            model=cleaned["model"],
            speed=cleaned.get("speed") or Speed.STANDARD,
            effective_from=start,
            effective_until=cleaned.get("effective_until"),
        )
        try:
            services.check_model_price(row=candidate)
        except ValidationError as exc:
            self.add_error(None, exc)
        return cleaned


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Prices: every rate explicit, date ranges that never overlap. Saving re-prices the calls
    recorded without a price once the save commits."""

    form = ModelPriceForm
    inlines = (PriceBandInline,)
    list_display = (
        "model",
        "speed",
        "effective_from",
        "effective_until",
        *(_column(f, money=True) for f in (*RATE_FIELDS, "web_search_usd_per_1k")),
        "band_count",
    )
    list_filter = ("speed", "model")
    search_fields = ("model",)
    ordering = ("model", "speed", "-effective_from")
    actions = ("reprice_missing",)
    fieldsets = (
        (None, {"fields": ("model", "speed", "effective_from", "effective_until", "note")}),
        ("USD per million tokens", {"fields": RATE_FIELDS}),
        ("Server tools", {"fields": ("web_search_usd_per_1k",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelPrice]:
        return super().get_queryset(request).annotate(n_bands=Count("bands"))

    @admin.display(description="bands", ordering="n_bands")
    def band_count(self, obj: ModelPrice) -> int:
        return int(getattr(obj, "n_bands", 0))

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        services.price_cache_clear_on_change()
        services.reprice_after_commit()  # the admin view is one transaction: after it commits

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "GET":
            for unpriced in selectors.unpriced_models():
                speed = "" if unpriced.speed == "standard" else f" ({unpriced.speed})"
                messages.warning(
                    request,
                    f"No price on file for {unpriced.model}{speed}: {unpriced.calls} call(s) "
                    f"since {when(unpriced.first_seen_at)} are counted at $0 until "
                    "you add one (they are re-priced when you do).",
                )
        return super().changelist_view(request, extra_context)

    @admin.action(description="Re-price calls recorded without a price (all models)")
    def reprice_missing(self, request: HttpRequest, queryset: QuerySet[ModelPrice]) -> None:
        result = services.reprice_missing_calls()
        messages.info(
            request,
            f"Re-priced {result.repriced} call(s); {result.still_missing} still have no price.",
        )


@admin.register(UnpricedModel)
class UnpricedModelAdmin(ReadOnlyAdmin):
    """Models called while they had no price (a row goes away once its calls are priced)."""

    list_display = ("model", "speed", _column("calls"), "first_seen_at", "last_seen_at")
    ordering = ("-last_seen_at",)


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    """Every ``manage.py reconcile`` run with its stored result (the page shows the latest)."""

    list_display = ("started_at", "since", "until", "match", "final", "finished_at", "error")
    list_filter = ("match", "final")
    ordering = ("-started_at",)


@admin.register(AuditLogPrune)
class AuditLogPruneAdmin(ReadOnlyAdmin):
    """Every ``manage.py prune_audit_log`` run: what it deleted and where the archive is (an
    empty ``finished at``: the run stopped part-way; its rows so far are archived)."""

    list_display = (
        "started_at",
        "cutoff",
        _column("rows"),
        "first_occurred_at",
        "last_occurred_at",
        "archive_path",
        "finished_at",
    )
    ordering = ("-started_at",)


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
        *_counts("requests", "errors", "input_tokens", "output_tokens", "cache_read_input_tokens"),
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
    list_display = (
        "day",
        "user",
        *_counts("requests", "errors", "cache_read_input_tokens"),
        "cost",
    )
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
        *_counts("requests", "errors", "cache_read_input_tokens"),
        "cost",
    )
    search_fields = ("=session_id", "user__username")
    list_select_related = ("user",)
    ordering = ("-last_at",)


@admin.register(OrganizationUsageDaily)
class OrganizationUsageDailyAdmin(RollupAdmin):
    list_display = (
        "day",
        "organization",
        "model",
        *_counts("requests", "errors"),
        "cost",
    )
    list_filter = (("day", admin.DateFieldListFilter), "model")
    list_select_related = ("organization",)
    ordering = ("-day",)
