"""The WebSocket API against a real erqpy with the HTTP plugin, through a real client
(``websocket-client``): stats pushes on /ws, and the consumer API on /ws/q/NAME with the
memcache connection's rules (docs/WEBSOCKET.md)."""

import signal
import subprocess
import sys
import textwrap
import time
from contextlib import closing

import pytest
import websocket

from http_helpers import start_http_server, wait_until
from ws_helpers import connect, fill, receive, receive_type, send, stats_with, subscribed, ws_url

pytestmark = pytest.mark.protocol


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("ws") / "data"
    started = start_http_server(data, {"ws_push_interval": 0.2, "sample_interval": 0.2})
    yield started
    started.stop()


def test_stats_pushes_arrive_about_every_interval_and_follow_the_queues(server):
    server.enqueue("pushed", {"n": 1})
    with closing(connect(server, "/ws")) as sock:
        first = stats_with(sock, "pushed")
        assert 1 == first["queues"]["pushed"]["items"]
        assert "up" == first["server"]["status"]
        started = time.monotonic()
        server.enqueue("pushed", {"n": 2})
        seen = [receive_type(sock, "stats") for _ in range(4)]
        elapsed = time.monotonic() - started
        assert 2 == seen[-1]["body"]["queues"]["pushed"]["items"]
        assert 0.3 < elapsed < 4.0  # four pushes 0.2 s apart, with room for a loaded machine
        # The push is the body of GET /stats: the same keys.
        assert set(server.get("/stats").json()) == set(seen[-1]["body"])


def test_history_1_pushes_the_body_of_stats_history_1(server):
    server.enqueue("pushedhistory", {"n": 1})
    with closing(connect(server, "/ws?history=1")) as sock:
        body = stats_with(sock, "pushedhistory")
        assert {"in", "out"} <= set(body["queues"]["pushedhistory"]["history"])
        expected = server.get("/stats?history=1").json()["queues"]["pushedhistory"]
        assert set(expected) == set(body["queues"]["pushedhistory"])
    with closing(connect(server, "/ws")) as plain:
        assert "history" not in stats_with(plain, "pushedhistory")["queues"]["pushedhistory"]


def test_a_message_to_the_stats_socket_is_answered_with_an_error_and_pushes_go_on(server):
    with closing(connect(server, "/ws")) as sock:
        send(sock, op="subscribe")
        assert "only pushes stats" in receive_type(sock, "error")["error"]
        assert "stats" == receive_type(sock, "stats")["type"]


def test_consumer_gets_jobs_in_order_and_ack_removes_them(server):
    fill(server, "wsjobs", 3)
    with closing(subscribed(server, "wsjobs", prefetch=2)) as sock:
        first, second = receive(sock), receive(sock)
        assert ("job", "job") == (first["type"], second["type"])
        assert [{"n": 0}, {"n": 1}] == [first["job"], second["job"]]
        assert first["id"] != second["id"] and first["queue"] == "wsjobs"
        assert 1 == server.depth("wsjobs")  # two held open, one waiting: prefetch is 2
        send(sock, op="ack", id=first["id"])
        assert {"type": "acked", "id": first["id"]} == receive(sock)
        third = receive(sock)  # room for one more
        assert {"n": 2} == third["job"]
        for job in (second, third):
            send(sock, op="ack", id=job["id"])
            assert "acked" == receive(sock)["type"]
    wait_until(lambda: server.get("/stats/wsjobs").json()["queues"]["wsjobs"]["open_transactions"] == 0,
               what="the socket's end seen")
    assert 0 == server.depth("wsjobs")  # acked jobs are gone for good, none came back


def test_nack_gives_the_job_back_to_the_head(server):
    server.enqueue("wsnack", {"n": 0})
    server.enqueue("wsnack", {"n": 1})
    with closing(subscribed(server, "wsnack", prefetch=1)) as sock:
        job = receive(sock)
        assert {"n": 0} == job["job"]
        send(sock, op="nack", id=job["id"])
        assert {"type": "nacked", "id": job["id"]} == receive(sock)
        again = receive(sock)  # back at the head: the same job comes first again
        assert {"n": 0} == again["job"] and again["id"] != job["id"]
        assert again["item_id"] == job["item_id"]
        send(sock, op="nack", id=again["id"])
        assert "nacked" == receive(sock)["type"]
    wait_until(lambda: server.depth("wsnack") == 2, what="both jobs waiting again")
    taken = server.post("/q/wsnack/take").json()
    assert {"n": 0} == taken  # the head is still the first job


def test_a_consumer_waits_for_a_job_that_comes_later_even_on_a_missing_queue(server):
    with closing(subscribed(server, "wslater", prefetch=1)) as sock:
        time.sleep(0.3)
        server.enqueue("wslater", {"late": True})
        job = receive(sock)
        assert {"late": True} == job["job"]
        send(sock, op="ack", id=job["id"])
        assert "acked" == receive(sock)["type"]


def test_jobs_held_by_a_closed_tcp_socket_go_back_to_the_head_in_order(server):
    fill(server, "wsdrop", 4)
    sock = subscribed(server, "wsdrop", prefetch=3)
    held = [receive(sock) for _ in range(3)]
    assert [0, 1, 2] == [job["job"]["n"] for job in held]
    assert 1 == server.depth("wsdrop")
    sock.sock.close()  # the TCP connection ends without a Close frame
    wait_until(lambda: server.depth("wsdrop") == 4, what="the held jobs given back")
    order = [server.post("/q/wsdrop/take").json()["n"] for _ in range(4)]
    assert [0, 1, 2, 3] == order


CLIENT = textwrap.dedent("""
    import json, sys, websocket
    sock = websocket.create_connection(sys.argv[1], timeout=10, suppress_origin=True)
    sock.send(json.dumps({"op": "subscribe", "prefetch": 2}))
    for _ in range(3):
        message = json.loads(sock.recv())
        if message["type"] == "job":
            print(message["job"]["n"], flush=True)
    sys.stdin.read()  # hold the jobs until killed
""")


def test_jobs_held_by_a_killed_client_process_come_back(server):
    fill(server, "wskill", 3)
    client = subprocess.Popen([sys.executable, "-c", CLIENT, ws_url(server, "/ws/q/wskill")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        got = [client.stdout.readline().strip() for _ in range(2)]
        assert ["0", "1"] == got
        wait_until(lambda: server.depth("wskill") == 1, what="two jobs held by the client")
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
        client.stdin.close()
        client.stdout.close()
    wait_until(lambda: server.depth("wskill") == 3, what="the killed client's jobs given back")
    assert {"n": 0} == server.post("/q/wskill/take").json()


def test_a_paused_queue_hands_out_nothing_until_resumed(server):
    server.enqueue("wspause", {"n": 0})
    assert 200 == server.post("/control/wspause", json={"paused": True}).status_code
    with closing(subscribed(server, "wspause", prefetch=1)) as sock:
        sock.settimeout(0.6)
        with pytest.raises(websocket.WebSocketTimeoutException):
            sock.recv()  # nothing while paused
        assert 200 == server.post("/control/wspause", json={"paused": False}).status_code
        job = receive(sock)
        assert {"n": 0} == job["job"]


def test_bad_messages_get_error_replies_and_the_socket_stays_usable(server):
    server.enqueue("wsbad", {"n": 0})
    with closing(connect(server, "/ws/q/wsbad")) as sock:
        sock.send("not json")
        assert "not JSON" in receive(sock)["error"]
        send(sock, op="dance")
        assert "error" == receive(sock)["type"]
        send(sock, op="subscribe", prefetch=0)
        assert "prefetch must be" in receive(sock)["error"]
        send(sock, op="subscribe", prefetch=10_000)
        assert "ws_max_prefetch" in receive(sock)["error"]
        send(sock, op="ack", id=12345)
        reply = receive(sock)
        assert ("error", 12345) == (reply["type"], reply["id"])
        for bad_id in ([1], {"id": 1}, True, "1", None):
            send(sock, op="ack", id=bad_id)
            assert "id must be the integer id" in receive(sock)["error"]
        sock.send("[" * 20_000 + "]" * 20_000)  # too deep for the parser
        assert "not JSON" in receive(sock)["error"]
        send(sock, op="subscribe")
        assert "subscribed" == receive(sock)["type"]
        job = receive(sock)
        send(sock, op="ack", id=job["id"])
        assert "acked" == receive(sock)["type"]
        send(sock, op="ack", id=job["id"])  # twice: no longer held
        assert "error" == receive(sock)["type"]
    assert 0 == server.depth("wsbad")


def test_quiescent_holds_delivery_back_but_settles_what_is_out_and_then_resumes(server):
    fill(server, "wsquiet", 2)
    with closing(subscribed(server, "wsquiet", prefetch=1)) as sock:
        first = receive(sock)
        server.srv.ctl("set-status", "quiescent", check=True)
        try:
            send(sock, op="ack", id=first["id"])  # never refused: it was handed out already
            assert {"type": "acked", "id": first["id"]} == receive(sock)
            refusal = receive_type(sock, "error")
            assert "quiescent" in refusal["error"] and refusal["retrying"] is True
            assert 1 == server.depth("wsquiet")  # nothing taken meanwhile
        finally:
            server.srv.ctl("set-status", "up", check=True)
        assert {"n": 1} == receive_type(sock, "job")["job"]


def test_a_deleted_queue_drops_what_the_socket_held_and_it_waits_for_the_queue_again(server):
    fill(server, "wsdeleted", 1)
    with closing(subscribed(server, "wsdeleted", prefetch=1)) as sock:
        job = receive(sock)
        assert 200 == server.delete("/queues/wsdeleted").status_code
        lost = receive(sock)  # the socket says so by itself, and frees the prefetch slot
        assert ("error", job["id"]) == (lost["type"], lost["id"]) and "no longer held" in lost["error"]
        send(sock, op="ack", id=job["id"])
        assert "error" == receive(sock)["type"]  # held no more: the queue is gone
        server.enqueue("wsdeleted", {"again": True})
        assert {"again": True} == receive_type(sock, "job")["job"]
