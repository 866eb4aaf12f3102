"""The Python client's ``failover`` mode against two real engine-mode nodes on one real
redis-server: requests go to the first node, and when it is SIGKILLed the client goes on
through the other, which serves the same queue in the same order."""

from erqpy.client import Client
from tests.engine.test_engine_server import engine_config


def test_the_client_fails_over_to_the_next_node_and_keeps_the_order(make_server, tmp_path, redis_primary,
                                                                    key_prefix):
    a, b = (make_server("--config", engine_config(tmp_path, name, redis_primary, key_prefix)) for name in "ab")
    names = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
    with Client(names, failover=True, timeout=5, connect_timeout=1, retry_after=5) as client:
        assert [names[0]] * 4 == [client.put("jobs", f"job{n}".encode()) for n in range(4)]
        assert b"job0" == client.get("jobs")
        assert 3 == client.queue_size("jobs")  # one node's count, not the sum of both

        a.kill9()

        assert b"job1" == client.get("jobs")  # the connection error is not an empty read
        assert names[1] == client.put("jobs", b"job4")
        assert [b"job2", b"job3", b"job4"] == [client.get("jobs") for _ in range(3)]
        assert client.get("jobs", wait=0.2) is None
        assert [names[1]] == client.live_servers()


def test_without_failover_an_empty_read_asks_every_node(make_server, tmp_path, redis_primary, key_prefix):
    """The Kestrel mode's sweep, for contrast: both nodes count the same engine items."""
    a, b = (make_server("--config", engine_config(tmp_path, name, redis_primary, key_prefix)) for name in "ab")
    names = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
    with Client(names, timeout=5) as client:
        client.put("jobs", b"one")
        assert 2 == client.queue_size("jobs")  # summed over independent servers: counted twice
