"""The server starts, stores and returns an item over raw bytes and pymemcache."""


def test_set_then_get_returns_the_item(raw):
    """A set item comes back from a get, with its flags."""
    assert b"STORED\r\n" == raw.call(b"set jobs 5 0 5\r\nhello\r\n")

    assert b"VALUE jobs 5 5\r\nhello\r\nEND\r\n" == raw.call(b"get jobs\r\n", b"END\r\n")


def test_pymemcache_roundtrip(server):
    """pymemcache with noreply off sees STORED and gets the item back once."""
    client = server.client(default_noreply=False)

    assert client.set("work", b"payload") is True
    assert b"payload" == client.get("work")
    assert client.get("work") is None
