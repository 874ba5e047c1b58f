"""The fair scheduler against a real redis-server: priority, min shares, WFQ by tokens, FIFO."""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from itertools import count

import pytest
from django.test import override_settings

from queueing.scheduler import FairScheduler, QueuedItem, get_scheduler

T0 = 1_800_000_000.0


@pytest.fixture
def scheduler(redis_client) -> FairScheduler:
    return FairScheduler()


_ids = count(1)


def add(
    scheduler: FairScheduler,
    *,
    user: str,
    priority: str = "query",
    cost: int = 1_000,
    weight: float = 1.0,
    at: float | None = None,
    request_id: int | None = None,
) -> int:
    request_id = request_id if request_id is not None else next(_ids)
    scheduler.enqueue(
        request_id=request_id,
        user_key=user,
        priority=priority,
        cost=cost,
        weight=weight,
        enqueued_at=at if at is not None else T0 + request_id / 1000,
    )
    return request_id


def dispatch(scheduler: FairScheduler, n: int) -> list[QueuedItem]:
    """Dispatch the head ``n`` times (or until empty), like the dispatcher does."""
    taken = []
    for _ in range(n):
        item = scheduler.peek()
        if item is None:
            break
        assert scheduler.pop(request_id=item.request_id)
        taken.append(item)
    return taken


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def test_higher_classes_go_first(scheduler) -> None:
    bulk = add(scheduler, user="u1", priority="bulk")
    query = add(scheduler, user="u1", priority="query")
    approval = add(scheduler, user="u2", priority="approval")
    interactive = add(scheduler, user="u3", priority="interactive")
    assert [i.request_id for i in dispatch(scheduler, 10)] == [approval, interactive, query, bulk]
    assert scheduler.peek() is None


def test_every_backlogged_class_keeps_its_minimum_share(scheduler) -> None:
    """All classes saturated; the low ones still get >= 10% of dispatched tokens each,
    even when bulk's requests are 16x larger than approval's."""
    costs = {"approval": 500, "interactive": 1_000, "query": 2_000, "bulk": 8_000}
    for priority, cost in costs.items():
        for n in range(2_000 if priority == "approval" else 300):
            add(scheduler, user=f"{priority}-{n % 3}", priority=priority, cost=cost)
    tokens: Counter[str] = Counter()
    for item in dispatch(scheduler, 1_500):
        tokens[item.priority] += item.cost
    total = sum(tokens.values())
    shares = {priority: tokens[priority] / total for priority in costs}
    for priority in ("interactive", "query", "bulk"):
        assert shares[priority] >= 0.09, shares
        assert shares[priority] <= 0.15, shares  # the minimum, not a lot more
    assert shares["approval"] >= 0.6, shares
    # all classes still backlogged: the measurement was under saturation
    assert all(c["requests"] > 0 for c in scheduler.depth()["classes"].values())


def test_a_class_alone_gets_everything_and_banks_no_credit(scheduler) -> None:
    for _ in range(50):
        add(scheduler, user="u1", priority="bulk")
    assert len(dispatch(scheduler, 50)) == 50
    # bulk ran alone: it owes nothing and is owed nothing; new approval work goes first again
    approval = [add(scheduler, user="u2", priority="approval") for _ in range(5)]
    bulk = add(scheduler, user="u1", priority="bulk")
    order = [i.request_id for i in dispatch(scheduler, 6)]
    assert order == [*approval, bulk]


def test_users_share_a_class_by_tokens_not_requests(scheduler) -> None:
    sizes = {"tiny": 500, "small": 1_000, "mid": 4_000, "big": 10_000}
    for user, size in sizes.items():
        for _ in range(400_000 // size):
            add(scheduler, user=user, cost=size)
    tokens: Counter[str] = Counter()
    while True:
        item = dispatch(scheduler, 1)
        if not item:
            break
        tokens[item[0].user_key] += item[0].cost
        if sum(tokens.values()) >= 200_000:  # stop while everyone is still backlogged
            break
    assert jain([float(tokens[u]) for u in sizes]) >= 0.99, tokens
    assert all(abs(tokens[u] - 50_000) <= 10_000 for u in sizes), tokens


def test_fifo_within_one_user_follows_enqueued_at(scheduler) -> None:
    late = add(scheduler, user="u1", at=T0 + 30)
    early = add(scheduler, user="u1", at=T0 + 10)
    middle = add(scheduler, user="u1", at=T0 + 20)
    same_time_low_id = add(scheduler, user="u1", at=T0 + 40, request_id=900_000)
    same_time_high_id = add(scheduler, user="u1", at=T0 + 40, request_id=1_000_000)
    order = [i.request_id for i in dispatch(scheduler, 10)]
    assert order == [early, middle, late, same_time_low_id, same_time_high_id]


def test_weight_two_gets_twice_the_tokens(scheduler) -> None:
    for _ in range(200):
        add(scheduler, user="heavy", weight=2.0)
        add(scheduler, user="normal", weight=1.0)
    served = Counter(i.user_key for i in dispatch(scheduler, 150))
    assert served["heavy"] == pytest.approx(2 * served["normal"], abs=2)


def test_idle_time_earns_no_credit(scheduler) -> None:
    for _ in range(50):
        add(scheduler, user="busy")
    dispatch(scheduler, 40)
    for _ in range(20):
        add(scheduler, user="newcomer")
    served = [i.user_key for i in dispatch(scheduler, 20)]
    # the newcomer joins at the current virtual time: it alternates, it does not get 20 in a row
    assert Counter(served) == {"busy": 10, "newcomer": 10}
    assert "busy" in served[:3]


def test_enqueue_is_idempotent(scheduler) -> None:
    assert scheduler.enqueue(request_id=7, user_key="u1", priority="query", cost=100, weight=1)
    assert not scheduler.enqueue(request_id=7, user_key="u1", priority="query", cost=100, weight=1)
    assert not scheduler.enqueue(request_id=7, user_key="u2", priority="bulk", cost=999, weight=1)
    depth = scheduler.depth()
    assert depth["requests"] == 1 and depth["tokens"] == 100
    assert depth["classes"]["query"]["users"] == {"u1": {"requests": 1, "tokens": 100}}
    assert scheduler.contains(request_id=7)
    assert not scheduler.contains(request_id=8)


def test_two_dispatchers_popping_the_same_head_one_wins(scheduler) -> None:
    first = add(scheduler, user="u1")
    second = add(scheduler, user="u1")
    head = scheduler.peek()
    assert head is not None and head.request_id == first
    assert scheduler.pop(request_id=first)
    assert not scheduler.pop(request_id=first)
    assert not scheduler.pop(request_id=999_999)  # never queued
    assert scheduler.peek().request_id == second  # type: ignore[union-attr]


def test_racing_dispatcher_threads_take_each_request_exactly_once(scheduler) -> None:
    queued = {
        add(scheduler, user=f"u{n % 7}", priority=("query", "bulk")[n % 2]) for n in range(300)
    }
    taken: list[int] = []
    lock = threading.Lock()

    def dispatcher() -> None:
        mine = FairScheduler()
        while True:
            item = mine.peek()
            if item is None:
                return
            if mine.pop(request_id=item.request_id):
                with lock:
                    taken.append(item.request_id)

    threads = [threading.Thread(target=dispatcher) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(taken) == sorted(queued)


def test_remove_cancels_wherever_the_request_stands(scheduler) -> None:
    a = add(scheduler, user="u1", cost=100)
    b = add(scheduler, user="u1", cost=200)
    c = add(scheduler, user="u1", cost=300)
    assert scheduler.remove(request_id=b)
    assert not scheduler.remove(request_id=b)
    assert not scheduler.contains(request_id=b)
    assert scheduler.depth()["tokens"] == 400
    assert [i.request_id for i in dispatch(scheduler, 5)] == [a, c]
    depth = scheduler.depth()
    assert depth["requests"] == 0 and depth["classes"]["query"]["users"] == {}


def test_position_within_the_users_fifo_is_exact(scheduler) -> None:
    ids = [add(scheduler, user="u1", cost=100 * (n + 1)) for n in range(5)]
    position = scheduler.position(request_id=ids[3])
    assert position is not None
    assert position.position == 4
    assert position.user_requests_ahead == 3
    assert position.user_tokens_ahead == 100 + 200 + 300
    assert position.class_requests == 5 and position.class_tokens == 1_500
    assert position.cost == 400 and position.priority == "query"
    assert scheduler.position(request_id=123_456_789) is None


def test_position_within_a_class_predicts_the_dispatch_order(scheduler) -> None:
    sizes = {"a": 700, "b": 1_500, "c": 4_000}
    weights = {"a": 1.0, "b": 2.0, "c": 1.0}
    ids = [
        add(scheduler, user=user, cost=size, weight=weights[user])
        for user, size in sizes.items()
        for _ in range(8)
    ]
    dispatch_prefix = dispatch(scheduler, 5)  # the clocks have moved
    queued = [request_id for request_id in ids if scheduler.contains(request_id=request_id)]
    predicted = {
        request_id: scheduler.position(request_id=request_id).position  # type: ignore[union-attr]
        for request_id in queued
    }
    actual = {item.request_id: n + 1 for n, item in enumerate(dispatch(scheduler, 100))}
    assert len(dispatch_prefix) == 5 and len(queued) == 19
    assert predicted == actual


def test_position_counts_higher_classes_ahead(scheduler) -> None:
    for _ in range(3):
        add(scheduler, user="boss", priority="approval", cost=1_000)
    mine = add(scheduler, user="me", priority="bulk", cost=1_000)
    position = scheduler.position(request_id=mine)
    assert position is not None
    assert position.class_requests_ahead == 0
    assert position.requests_ahead == 3 and position.tokens_ahead == 3_000
    assert position.position == 4
    assert [i.request_id for i in dispatch(scheduler, 4)][-1] == mine


def test_rebuild_after_redis_lost_its_state_keeps_the_original_order(
    scheduler, redis_client
) -> None:
    rows = [(n, f"u{n % 3}", T0 + n) for n in range(1, 13)]  # (id, user, created_at)
    for request_id, user, at in reversed(rows):  # enqueued in any order
        add(scheduler, user=user, at=at, request_id=request_id)
    before = [i.request_id for i in dispatch(scheduler, 12)]
    redis_client.flushall()
    for request_id, user, at in rows:
        add(scheduler, user=user, at=at, request_id=request_id)
    after = [i.request_id for i in dispatch(scheduler, 12)]
    assert before == after == [request_id for request_id, _, _ in rows]


def test_bad_input_names_the_problem(scheduler) -> None:
    with pytest.raises(ValueError, match="Unknown priority class 'urgent'"):
        scheduler.enqueue(request_id=1, user_key="u1", priority="urgent", cost=10, weight=1)
    with pytest.raises(ValueError, match="cost must be a positive whole number"):
        scheduler.enqueue(request_id=1, user_key="u1", priority="query", cost=0, weight=1)
    with pytest.raises(ValueError, match="weight must be a positive number"):
        scheduler.enqueue(request_id=1, user_key="u1", priority="query", cost=10, weight=0)
    with pytest.raises(ValueError, match="user_key"):
        scheduler.enqueue(request_id=1, user_key="a:b", priority="query", cost=10, weight=1)
    assert scheduler.depth()["requests"] == 0


def test_classes_come_from_settings(redis_client) -> None:
    with override_settings(GATEWAY_PRIORITY_CLASSES=[("now", 0.0), ("later", 0.5)]):
        scheduler = get_scheduler()
        later = add(scheduler, user="u1", priority="later")
        now = add(scheduler, user="u1", priority="now")
        assert [i.request_id for i in dispatch(scheduler, 2)] == [now, later]
        assert set(scheduler.depth()["classes"]) == {"now", "later"}


def test_depth_reports_classes_and_users(scheduler) -> None:
    add(scheduler, user="u1", priority="query", cost=100)
    add(scheduler, user="u1", priority="bulk", cost=200)
    add(scheduler, user="u2", priority="bulk", cost=300)
    depth = scheduler.depth()
    assert depth["requests"] == 3 and depth["tokens"] == 600
    assert depth["classes"]["bulk"] == {
        "requests": 2,
        "tokens": 500,
        "users": {"u1": {"requests": 1, "tokens": 200}, "u2": {"requests": 1, "tokens": 300}},
    }
    assert depth["users"] == {
        "u1": {"requests": 2, "tokens": 300},
        "u2": {"requests": 1, "tokens": 300},
    }
    assert depth["classes"]["approval"] == {"requests": 0, "tokens": 0, "users": {}}
    per_user: defaultdict[str, int] = defaultdict(int)
    for cls in depth["classes"].values():
        for user, row in cls["users"].items():
            per_user[user] += row["tokens"]
    assert per_user == {u: row["tokens"] for u, row in depth["users"].items()}


def test_heads_list_each_class_in_the_order_it_dispatches(scheduler) -> None:
    sizes = {"a": 700, "b": 1_500, "c": 4_000, "d": 700}
    weights = {"a": 1.0, "b": 2.0, "c": 1.0, "d": 1.0}
    for n in range(6):
        for user, size in sizes.items():
            # "d" arrives at the same instants as "a": equal start tags, broken by id
            at = T0 + n if user in ("a", "d") else None
            add(scheduler, user=user, cost=size, weight=weights[user], at=at)
    dispatch(scheduler, 7)  # the clocks have moved: tags differ and some are tied
    add(scheduler, user="newcomer", cost=300)  # starts at the class clock

    heads = scheduler.heads(limit=10, user_keys=["b", "newcomer", "nobody"])

    front = heads["query"]
    actual = dispatch(scheduler, 10)
    assert [i.request_id for i in front.requests] == [i.request_id for i in actual]
    assert front.requests == actual  # user, class, cost and enqueued_at too
    assert set(front.user_next) == {"b", "newcomer"}
    assert heads["approval"].requests == [] and heads["approval"].user_next == {}


def test_heads_are_read_only_and_bounded(scheduler) -> None:
    for n in range(30):
        add(scheduler, user=f"u{n % 7}", cost=100 + n)
    add(scheduler, user="boss", priority="approval", cost=50)
    before = scheduler.depth()

    heads = scheduler.heads(limit=3, user_keys=["u3"])

    assert [len(h.requests) for h in heads.values()] == [1, 0, 3, 0]
    assert scheduler.depth() == before
    first_of_u3 = heads["query"].user_next["u3"]
    position = scheduler.position(request_id=first_of_u3)
    assert position is not None and position.user_requests_ahead == 0
    taken = [i.request_id for i in dispatch(scheduler, 4)]
    assert taken[1:] == [i.request_id for i in heads["query"].requests]


@pytest.mark.parametrize("seed", range(5))
def test_heads_match_dispatch_for_random_queues(scheduler, seed: int) -> None:
    rng = random.Random(seed)
    users = [f"r{n}" for n in range(rng.randint(2, 9))]
    for _ in range(rng.randint(20, 60)):
        add(
            scheduler,
            user=rng.choice(users),
            cost=rng.choice([1, 50, 999, 1_000, 4_096]),
            weight=rng.choice([1.0, 1.0, 2.0, 0.5]),
            at=T0 + rng.randint(0, 5),  # many equal enqueue times: ties everywhere
        )
        if rng.random() < 0.2:
            dispatch(scheduler, 1)
    predicted = [i.request_id for i in scheduler.heads(limit=15)["query"].requests]
    assert predicted == [i.request_id for i in dispatch(scheduler, 15)]
