"""``erqpy consume`` retries wait on the server, not in a consumer: the retry is a delayed
item (``set q/delay=``) and a retry read early is given back with ``get q/abort/delay=``,
so no job is held open while it waits, and its attempt count is kept."""

import time

from erqpy.client import Client
from erqpy.client.envelope import make_envelope

from clienthelpers import server_spec, wait_until


def fields(server, queue):
    stats = Client([server_spec(server)]).stats()[server_spec(server)]
    return tuple(stats.get(f"queue_{queue}_{name}", 0) for name in ("items", "delayed", "open_transactions"))


def test_a_retry_waits_as_a_delayed_item_and_nobody_holds_it(server, consumers, events):
    client = Client([server_spec(server)])
    client.put("dlq", make_envelope("job", 7))
    proc = consumers("dlq", [server], "--handler", "consume_handlers:FlakyWorker", "--backoff", "1.5",
                     "--max-jobs", "1")

    wait_until(lambda: len(events.events("attempt")) == 1 and fields(server, "dlq") == (0, 1, 0),
               timeout=30, what="the first retry, delayed on the server")
    first_failed = time.monotonic()
    wait_until(lambda: len(events.events("attempt")) == 2, timeout=30, what="the second attempt")

    assert time.monotonic() - first_failed >= 1.2  # not before its delay
    assert 0 == proc.wait()
    assert [("7", "1"), ("7", "2"), ("7", "3")] == [e[1:3] for e in events.events("attempt")]
    assert (0, 0, 0) == fields(server, "dlq")


def test_a_retry_read_before_it_is_due_is_given_back_with_its_attempt(server, consumers, events):
    """A retry envelope put as a plain item (as by a consumer whose server took no delay):
    the consumer that reads it early gives it back until due instead of holding it, and
    it then runs as the attempt its envelope says."""
    client = Client([server_spec(server)])
    envelope = make_envelope("job", 8)
    envelope["meta"].update({"attempt": 2, "retry_at": round(time.time() + 2.0, 3)})
    client.put("earlyq", envelope)
    proc = consumers("earlyq", [server], "--handler", "consume_handlers:record", "--max-jobs", "1")

    wait_until(lambda: "given back until then" in proc.log(), timeout=30, what="the early read")
    assert (0, 1, 0) == fields(server, "earlyq")
    assert [] == events.events("done")

    assert 0 == proc.wait()
    assert [("8", "2")] == [e[1:3] for e in events.events("done")]
    assert (0, 0, 0) == fields(server, "earlyq")
