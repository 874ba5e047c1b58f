from __future__ import annotations

from collections.abc import Iterator

import pytest

from usage import services


@pytest.fixture(autouse=True)
def _list_prices(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every usage test starts from the shipped price sheet (usage/price_sheets) and an empty
    price cache.

    Transactional tests elsewhere flush the database (prices included), and a price edited in
    one test must not linger in the in-process cache for the next.
    """
    services.price_cache_clear()
    if request.node.get_closest_marker("django_db"):
        request.getfixturevalue("_django_db_helper")
        services.prices_seed_defaults()
    yield
    services.price_cache_clear()
