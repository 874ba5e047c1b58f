from ratelimit_project.redis import get_redis


def test_project_redis_is_the_isolated_test_server(redis_client) -> None:
    redis_client.set("k", "v")
    assert get_redis().get("k") == b"v"
    assert "127.0.0.1" in get_redis().connection_pool.connection_kwargs["host"]
