"""erqpy.producer.Producer and the envelope format, against a real server."""

import json
import time

import pytest

from erqpy.client import Client
from erqpy.client.envelope import Job
from erqpy.client.producer import Producer, namespaced

from clienthelpers import server_spec


def test_put_wraps_the_job_in_an_envelope_on_the_namespaced_queue(server):
    """put() stores {job, payload, tenant, meta} on <namespace>:<queue>."""
    before = time.time()
    with Producer([server_spec(server)], namespace="shop", tenant="acme",
                  metadata={"source": "web"}) as producer:
        sent = producer.put("emails", "send_welcome", {"user": 42}, metadata={"trace": "t1"})

    stored = Client([server_spec(server)]).get("shop:emails")

    assert sent == stored
    assert ("send_welcome", {"user": 42}, "acme") == (stored["job"], stored["payload"], stored["tenant"])
    meta = stored["meta"]
    assert (1, "web", "t1") == (meta["attempt"], meta["source"], meta["trace"])
    assert before <= meta["enqueued_at"] <= time.time()
    assert 32 == len(meta["id"])


def test_tenant_can_be_set_per_job(server):
    """A tenant given to put() overrides the producer's default."""
    producer = Producer([server_spec(server)], tenant="acme")

    producer.put("tenants", "job", 1, tenant="globex")
    producer.put("tenants", "job", 2)

    reader = Client([server_spec(server)])
    assert ["globex", "acme"] == [reader.get("tenants")["tenant"], reader.get("tenants")["tenant"]]


def test_put_many_stores_every_job_in_order(server):
    """put_many() puts (job, payload) pairs in batches, each with its own envelope id."""
    producer = Producer([server_spec(server)], namespace="bulk")

    sent = producer.put_many("q", [("resize", n) for n in range(120)], batch=50)

    reader = Client([server_spec(server)])
    stored = [reader.get("bulk:q") for _ in range(120)]
    assert sent == stored
    assert 120 == len({e["meta"]["id"] for e in stored})
    assert None is reader.get("bulk:q")


def test_a_producer_can_share_a_client(server):
    """Given a Client, the producer uses it and leaves it open on close()."""
    client = Client([server_spec(server)])
    with Producer(client) as producer:
        producer.put("shared", "job")

    assert "job" == client.get("shared")["job"]


def test_namespace_must_not_contain_the_separator():
    """A namespace with ':' would make queue names ambiguous: refused."""
    assert "a:b" == namespaced("a", "b")
    assert "b" == namespaced(None, "b")
    with pytest.raises(ValueError):
        namespaced("a:b", "c")


def test_a_hand_encoded_json_envelope_is_read_as_a_job(server):
    """An envelope json-encoded by another producer (a PHP string, flags 0) parses as a job;
    a bare value becomes a job without a name."""
    mc = server.client(default_noreply=False)
    envelope = {"job": "thumb", "payload": {"id": 3}, "tenant": "t", "meta": {"id": "abc"}}
    mc.set("php", json.dumps(envelope).encode(), flags=0)
    mc.set("php", b"plain text", flags=0)
    reader = Client([server_spec(server)])

    job = Job.from_item(reader.open("php"))
    reader.finish("php")
    bare = Job.from_item(reader.open("php"))
    reader.finish("php")

    assert ("thumb", {"id": 3}, "t", "abc") == (job.name, job.payload, job.tenant, job.id)
    assert (None, b"plain text") == (bare.name, bare.payload)
