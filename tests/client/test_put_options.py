"""``Client.put`` / ``put_many`` / ``Producer.put`` with ``delay=``, ``at=`` and
``priority=``, against a real server: the options reach it as set key options."""

import datetime
import time

import pytest

from erqpy.client import Client
from erqpy.client.producer import Producer
from erqpy.client.put_options import key_options

from clienthelpers import server_spec, wait_until


def test_delay_in_seconds_keeps_the_item_from_readers_until_due(server):
    client = Client([server_spec(server)])
    client.put("later", b"x", delay=0.8)
    put_at = time.monotonic()

    assert client.get("later") is None
    assert b"x" == client.get("later", wait=10)
    assert time.monotonic() - put_at >= 0.7


def test_at_takes_a_datetime_or_unix_seconds(server):
    client = Client([server_spec(server)])
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1.5)
    client.put("atq", b"dt", at=soon)
    client.put("atq", b"past", at=time.time() - 60)

    assert b"past" == client.get("atq")
    assert client.get("atq") is None
    assert b"dt" == client.get("atq", wait=10)
    assert time.time() >= soon.timestamp() - 0.01


def test_priority_is_served_most_urgent_first(server):
    client = Client([server_spec(server)])
    client.put("priq", b"default")
    client.put("priq", b"low", priority=9)
    client.put_many("priq", [b"urgent1", b"urgent2"], priority=0)

    assert [b"urgent1", b"urgent2", b"default", b"low"] == [client.get("priq") for _ in range(4)]


def test_producer_passes_them_on(server):
    with Producer([server_spec(server)]) as producer:
        producer.put("prodq", "later", delay=0.5)
        producer.put("prodq", "now", priority=1)
        client = Client([server_spec(server)])
        assert "now" == client.get("prodq")["job"]
        wait_until(lambda: client.get("prodq"), timeout=10, what="the delayed job")


@pytest.mark.parametrize("kwargs, text", [
    ({"delay": -1}, "delay must be a number of seconds >= 0"),
    ({"delay": 1, "at": 5}, "give delay or at, not both"),
    ({"at": "tomorrow"}, "at must be a datetime or Unix seconds"),
    ({"priority": 10}, "priority must be a whole number 0 to 9"),
    ({"priority": True}, "priority must be a whole number 0 to 9"),
])
def test_bad_options_are_refused_before_anything_is_sent(kwargs, text):
    with pytest.raises(ValueError, match=text):
        key_options(**kwargs)


def test_the_key_options_on_the_wire():
    assert "" == key_options()
    assert "/delay=1500/pri=2" == key_options(delay=1.5, priority=2)
    assert "/at=1700000001" == key_options(at=1700000000.2)
