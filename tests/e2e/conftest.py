"""Shared pieces for the end-to-end tests: the project pointed at the emulator, and every URL.

``wired`` points the project at the session emulator (no worker: nothing leaves the queue unless
a test starts one) with fast retries and list prices. ``all_routes`` walks the real root URLconf so
the intruder and secret tests cover URLs added later without anyone editing them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import django_rq
from django.apps import apps
from django.contrib.contenttypes.models import ContentType
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rq import Worker
from rq.job import Job

from queueing.models import ApiToken, LLMRequest

MODEL = "claude-sonnet-5-5"


# --- every URL of the project -------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One URL pattern of the root URLconf, flattened: ``route`` is the full pattern text."""

    route: str
    name: str | None  # namespaced, e.g. "usage:session"; None for unnamed patterns
    params: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.name or self.route


def _walk(
    patterns: list, prefix: str, namespace: str | None, regex_prefix: str
) -> Iterator[tuple[str, str | None, str]]:
    for pattern in patterns:
        regex = regex_prefix + pattern.pattern.regex.pattern.lstrip("^").rstrip("$")
        if isinstance(pattern, URLResolver):
            inner = namespace
            if pattern.namespace:
                inner = f"{namespace}:{pattern.namespace}" if namespace else pattern.namespace
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern), inner, regex)
        elif isinstance(pattern, URLPattern):
            name = f"{namespace}:{pattern.name}" if namespace and pattern.name else pattern.name
            yield prefix + str(pattern.pattern), name, regex


def all_routes() -> list[Route]:
    """Every URL pattern the root URLconf serves. Names used twice (django-rq's ``home_json``
    with and without a token) are keyed by their route text instead."""
    raw = list(_walk(get_resolver().url_patterns, "", None, ""))
    names = [name for _, name, _ in raw if name]
    routes = []
    for route, name, regex in raw:
        params = tuple(re.compile(regex).groupindex)
        unique = name if name and names.count(name) == 1 else None
        routes.append(Route(route=route, name=unique, params=params))
    return routes


def route_path(route: Route, values: Mapping[str, str]) -> str:
    """A concrete path for ``route`` with its parameters taken from ``values``."""
    kwargs = {p: values[p] for p in route.params}
    if route.name:
        return reverse(route.name, kwargs=kwargs)
    # Unnamed or duplicated names: substitute into the pattern text.
    text = route.route
    for param, value in kwargs.items():
        text = re.sub(rf"<(?:\w+:)?{param}>|\(\?P<{param}>[^)]*\)\??", value, text)
    text = text.replace("^", "").replace("$", "").replace("/?", "/")
    return "/" + text


def rq_job_id() -> str:
    """A job that exists (django-rq's job pages answer 500 for one that does not)."""
    queue = django_rq.get_queue("default")
    job = Job.create("builtins.print", args=("e2e",), id="e2ejob", connection=queue.connection)
    job.origin = queue.name
    job.save()
    return str(job.id)


def rq_worker_key() -> str:
    """A registered RQ worker (django-rq's worker page asserts that it exists)."""
    queue = django_rq.get_queue("default")
    worker = Worker([queue], connection=queue.connection, name="e2eworker")
    worker.register_birth()
    return str(worker.key)


def url_values(*, request: LLMRequest) -> dict[str, str]:
    """Values for every URL parameter: ``request``'s own (its pk, owner, session, the owner's
    organization and first gateway key), and things that exist where a page needs them to (an
    RQ job and worker)."""
    key = ApiToken.objects.filter(user_id=request.user_id).order_by("pk").first()
    return {
        "pk": str(request.pk),
        "user_id": str(request.user_id),
        "session_id": request.session_id,
        "org_id": str(request.organization_id or 999999),
        "key_id": str(key.pk if key is not None else 999999),
        "app_label": "queueing",
        "content_type_id": str(ContentType.objects.get_for_model(LLMRequest).pk),
        "object_id": str(request.pk),
        "url": "no-such-admin-page/",
        "uidb64": "MQ",
        "token": "notthetoken",
        "queue_index": "0",
        "scheduler_index": "0",
        "connection_index": "0",
        "job_id": rq_job_id(),
        "result_id": "no-such-result",
        "key": rq_worker_key(),
        "scheduler_name": "no-such-scheduler",
        "cron_job_name": "no-such-cron-job",
    }


def admin_ids(route: Route) -> dict[str, str]:
    """For an admin URL about one object: the first object of that model (or an id that does
    not exist when there is none)."""
    match = re.match(r"admin/(\w+)/(\w+)/", route.route)
    wanted = [p for p in ("object_id", "id") if p in route.params]
    if not match or not wanted or route.key == "admin:view_on_site":
        return {}
    try:
        model = apps.get_model(match.group(1), match.group(2))
    except LookupError:
        return dict.fromkeys(wanted, "999999")
    first = None
    if model._meta.managed:  # django-rq's Dashboard has no table
        first = model._default_manager.order_by("pk").first()
    return dict.fromkeys(wanted, str(first.pk) if first else "999999")


def body_text(response: Any) -> str:
    """The whole body of a test-client response, streamed (CSV) or not."""
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content).decode(errors="replace")
    return str(response.content.decode(errors="replace"))
