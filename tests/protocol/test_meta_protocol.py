"""The meta protocol (PROTOCOL.md "Meta protocol (erqpy extension)") in raw bytes against a
real erqpy: what each command means for a queue, its framing, quiet mode and its errors.
What erqpy answers as memcached does is compared with a real memcached in
test_meta_vs_memcached.py."""

import base64
import time

from proto_helpers import get, make_queue, nodelay, put, queue_stat, stats, value, wait_for_waiters, wait_until


def ms(key: str, data: bytes, *flags: str) -> bytes:
    tail = "".join(" " + flag for flag in flags)
    return b"ms %s %d%s\r\n%s\r\n" % (key.encode(), len(data), tail.encode(), data)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_ms_enqueues_and_mg_v_dequeues_in_fifo_order(shared_server, conn, q):
    conn.send(ms(q, b"one") + ms(q, b"two", "F7") + ms(q, b"three", "T0"))
    assert [b"HD\r\n"] * 3 == [conn.line() for _ in range(3)]

    conn.send(b"mg %s v\r\nmg %s v f\r\nmg %s v\r\nmg %s v\r\n" % ((q.encode(),) * 4))

    assert b"VA 3\r\none\r\n" == conn.read_until(b"one\r\n")
    assert b"VA 3 f7\r\ntwo\r\n" == conn.read_until(b"two\r\n")
    assert b"VA 5\r\nthree\r\n" == conn.read_until(b"three\r\n")
    assert b"EN\r\n" == conn.line()
    assert 0 == queue_stat(shared_server, q, "items")


def test_ms_keys_take_the_options_of_a_set_key(shared_server, conn, q):
    """/pri= and /delay= (PROTOCOL.md, set options) in an ms key, as in a set key."""
    conn.send(ms(q, b"late", "F1") + ms(q + "/pri=1", b"urgent") + ms(q + "/delay=600000", b"later"))
    assert [b"HD\r\n"] * 3 == [conn.line() for _ in range(3)]
    assert b"CLIENT_ERROR unknown set option open\r\n" == conn.call(ms(q + "/open", b"x"))

    conn.send(b"mg %s v\r\nmg %s v f\r\nmg %s v\r\n" % ((q.encode(),) * 3))
    assert b"VA 6\r\nurgent\r\nVA 4 f1\r\nlate\r\nEN\r\n" == conn.read_until(b"EN\r\n")
    assert (0, 1) == (queue_stat(shared_server, q, "items"), queue_stat(shared_server, q, "delayed"))


def test_ms_and_the_text_protocol_share_the_queue_flags_and_expiry(conn, q):
    """An item stored by ms is an item: get returns it with its flags, and ms T is an exptime."""
    assert b"HD\r\n" == conn.call(ms(q, b"meta", "F42", "T3600"))
    assert b"HD\r\n" == conn.call(ms(q, b"gone", "T-1"))  # negative: already expired
    conn.send(b"set %s 9 0 4\r\ntext\r\n" % q.encode())
    assert b"STORED\r\n" == conn.line()

    assert value(q, b"meta", 42) + b"END\r\n" == get(conn, q)
    reply = conn.call(b"mg %s v f t s\r\n" % q.encode(), b"text\r\n")
    assert b"VA 4 f9 t-1 s4\r\ntext\r\n" == reply


def test_mg_t_is_the_seconds_left_and_c_the_gets_cas(conn, q):
    assert b"HD\r\n" == conn.call(ms(q, b"x", "T100"))
    conn.send(b"gets %s/peek\r\n" % q.encode())
    cas = conn.read_until(b"END\r\n").split(b"\r\n")[0].split()[-1]

    reply = conn.call(b"mg %s v t c\r\n" % q.encode(), b"x\r\n")

    head = reply.split(b"\r\n")[0].split()
    assert head[:2] == [b"VA", b"1"] and head[3] == b"c" + cas
    assert 99 <= int(head[2][1:]) <= 100


def test_return_flags_come_back_in_request_order_with_the_opaque(conn, q):
    assert b"HD O77 k%s\r\n" % q.encode() == conn.call(ms(q, b"ab", "O77", "k"))

    reply = conn.call(b"mg %s s k v Oxyz f\r\n" % q.encode(), b"ab\r\n")

    assert b"VA 2 s2 k%s Oxyz f0\r\nab\r\n" % q.encode() == reply
    assert b"EN k%s Oabc\r\n" % q.encode() == conn.call(b"mg %s k Oabc v\r\n" % q.encode())


def test_mg_without_v_looks_at_the_head_and_takes_nothing(shared_server, conn, q):
    assert b"EN\r\n" == conn.call(b"mg %s\r\n" % q.encode())
    put(conn, q, b"kept")

    assert b"HD s4 f0\r\n" == conn.call(b"mg %s s f\r\n" % q.encode())
    assert b"HD\r\n" == conn.call(b"mg %s\r\n" % q.encode())

    assert 1 == queue_stat(shared_server, q, "items")
    assert b"VA 4\r\nkept\r\n" == conn.call(b"mg %s v\r\n" % q.encode(), b"kept\r\n")


def test_mg_with_a_wait_option_blocks_until_an_item_comes(shared_server, clients, q):
    make_queue(shared_server, q)
    reader, writer = clients(), clients()
    reader.send(b"mg %s/t=20000 v k\r\n" % q.encode())
    wait_for_waiters(shared_server, q, 1)

    assert b"HD\r\n" == writer.call(ms(q, b"late"))

    assert b"VA 4 k%s/t=20000\r\nlate\r\n" % q.encode() == reader.read_until(b"late\r\n")


def test_mg_with_a_wait_option_answers_en_when_the_time_is_up(conn, q):
    started = time.monotonic()
    assert b"EN\r\n" == conn.call(b"mg %s/t=200 v\r\n" % q.encode())
    assert time.monotonic() - started >= 0.15


def test_a_reliable_read_is_confirmed_by_mg_close(shared_server, conn, q):
    put(conn, q, b"job", b"next")

    assert b"VA 3\r\njob\r\n" == conn.call(b"mg %s/open v\r\n" % q.encode(), b"job\r\n")
    assert 1 == queue_stat(shared_server, q, "open_transactions")
    assert b"HD\r\n" == conn.call(b"mg %s/close\r\n" % q.encode())
    assert b"EN\r\n" == conn.call(b"mg %s/close\r\n" % q.encode())  # nothing open any more

    assert 0 == queue_stat(shared_server, q, "open_transactions")
    assert 1 == queue_stat(shared_server, q, "items")


def test_close_open_confirms_one_and_opens_the_next(shared_server, conn, q):
    put(conn, q, b"a", b"b")
    conn.call(b"mg %s/open v\r\n" % q.encode(), b"a\r\n")

    assert b"VA 1\r\nb\r\n" == conn.call(b"mg %s/close/open v\r\n" % q.encode(), b"b\r\n")

    assert 0 == queue_stat(shared_server, q, "items")
    assert 1 == queue_stat(shared_server, q, "open_transactions")


def test_an_open_read_comes_back_when_its_connection_drops(shared_server, clients, q):
    holder = clients()
    put(holder, q, b"precious")
    assert b"VA 8\r\nprecious\r\n" == holder.call(b"mg %s/open v\r\n" % q.encode(), b"precious\r\n")

    holder.reset()
    wait_until(lambda: queue_stat(shared_server, q, "open_transactions") == 0, what="the read given back")

    other = clients()
    assert b"VA 8 h1\r\nprecious\r\n" == other.call(b"mg %s v h\r\n" % q.encode(), b"precious\r\n")


def test_mg_abort_gives_the_read_back_to_the_head(conn, q):
    put(conn, q, b"first", b"second")
    conn.call(b"mg %s/open v h\r\n" % q.encode(), b"first\r\n")

    assert b"HD\r\n" == conn.call(b"mg %s/abort\r\n" % q.encode())
    assert b"EN\r\n" == conn.call(b"mg %s/abort\r\n" % q.encode())
    conn.call(b"mg %s/open v\r\n" % q.encode(), b"first\r\n")
    assert b"EN\r\n" == conn.call(b"mg %s/abort v\r\n" % q.encode())  # with v: no value, a miss

    assert b"VA 5 h1\r\nfirst\r\n" == conn.call(b"mg %s v h\r\n" % q.encode(), b"first\r\n")


def test_mg_peek_option_and_the_open_read_rules_are_gets(conn, q):
    put(conn, q, b"x")
    conn.call(b"mg %s/open v\r\n" % q.encode(), b"x\r\n")

    reply = conn.call(b"mg %s v\r\n" % q.encode())
    assert reply.startswith(b"CLIENT_ERROR this connection has an open read on the queue")
    assert b"EN\r\n" == conn.call(b"mg %s/peek v\r\n" % q.encode())  # the open one is not waiting
    assert b"CLIENT_ERROR mg with /open hands out the item: it needs the v flag\r\n" == conn.call(
        b"mg %s/close/open\r\n" % q.encode())
    assert b"CLIENT_ERROR peek cannot be combined with open, close or abort\r\n" == conn.call(
        b"mg %s/peek/open v\r\n" % q.encode())
    assert b"MN\r\n" == conn.call(b"mn\r\n")  # still in step


def test_quiet_mode_leaves_out_hd_and_en_until_mn(conn, q):
    missing = q + "_none"
    conn.send(ms(q, b"a", "q") + ms(q, b"b", "q", "O1")
              + b"mg %s q v O2\r\nmg %s q v\r\nmd %s q\r\nmd %s q\r\nmn\r\n"
              % (q.encode(), missing.encode(), q.encode(), q.encode()))

    assert b"VA 1 O2\r\na\r\nNF\r\nMN\r\n" == conn.read_until(b"MN\r\n")


def test_quiet_mode_still_sends_errors(conn, q):
    conn.send(ms(q, b"a", "q", "Z") + b"mg %s q v v\r\nmn\r\n" % q.encode())

    assert b"CLIENT_ERROR invalid flag\r\nCLIENT_ERROR duplicate flag\r\nMN\r\n" == conn.read_until(b"MN\r\n")


def test_base64_keys_name_queues_and_carry_options(shared_server, conn, q):
    assert b"HD k%s b\r\n" % b64(q).encode() == conn.call(ms(b64(q), b"bin", "b", "k"))
    assert 1 == queue_stat(shared_server, q, "items")

    reply = conn.call(b"mg %s b v k\r\n" % b64(q + "/open").encode(), b"bin\r\n")

    assert b"VA 3 k%s b\r\nbin\r\n" % b64(q + "/open").encode() == reply
    assert b"HD\r\n" == conn.call(b"mg %s b\r\n" % b64(q + "/close").encode())
    assert b"CLIENT_ERROR error decoding key\r\n" == conn.call(b"mg %s! b v\r\n" % b64(q).encode())


def test_md_deletes_the_queue(shared_server, conn, q):
    put(conn, q, b"x", b"y")

    assert b"HD k%s\r\n" % q.encode() == conn.call(b"md %s k\r\n" % q.encode())

    assert f"queue_{q}_items" not in stats(shared_server)
    assert b"NF\r\n" == conn.call(b"md %s\r\n" % q.encode())
    assert b"EN\r\n" == conn.call(b"mg %s v\r\n" % q.encode())


def test_me_is_a_line_of_the_queue_stats(conn, q):
    assert b"EN\r\n" == conn.call(b"me %s\r\n" % q.encode())
    put(conn, q, b"abc", b"de")

    reply = conn.call(b"me %s\r\n" % q.encode())

    head, *fields = reply.rstrip(b"\r\n").split(b" ")
    assert [b"ME", q.encode()] == [head, fields.pop(0)]
    got = dict(field.split(b"=", 1) for field in fields)
    assert (b"2", b"5", b"0") == (got[b"items"], got[b"bytes"], got[b"open_transactions"])


def test_ma_is_refused_for_a_queue(conn, q):
    assert b"NF\r\n" == conn.call(b"ma %s\r\n" % q.encode())
    put(conn, q, b"1")

    assert b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n" == conn.call(
        b"ma %s v\r\n" % q.encode())
    conn.send(b"mg %s v\r\n" % q.encode())
    assert b"VA 1\r\n1\r\n" == conn.read_exactly(len(b"VA 1\r\n1\r\n"))


def test_a_refused_ms_still_consumes_its_block(shared_server, conn, q):
    """The block of a refused ms is data, never commands: a client cannot smuggle one."""
    smuggled = b"md %s\r\n" % q.encode()
    put(conn, q, b"keep")
    conn.send(ms(q, smuggled, "Z") + ms(q, smuggled, "MA") + ms("bad~name", smuggled) + b"mn\r\n")

    assert (b"CLIENT_ERROR invalid flag\r\nCLIENT_ERROR invalid mode for ms M token\r\n"
            b"CLIENT_ERROR bad queue name\r\nMN\r\n") == conn.read_until(b"MN\r\n")
    assert 1 == queue_stat(shared_server, q, "items")


def test_ms_sent_a_byte_at_a_time_is_framed_by_its_length(conn, q):
    nodelay(conn)
    request = ms(q, b"a\r\nmn\r\nb", "F3", "k") + b"mg %s v f\r\n" % q.encode()
    for index in range(len(request)):
        conn.send(request[index : index + 1])

    assert b"HD k%s\r\n" % q.encode() == conn.line()
    assert b"VA 8 f3\r\na\r\nmn\r\nb\r\n" == conn.read_exactly(len(b"VA 8 f3\r\na\r\nmn\r\nb\r\n"))


def test_ms_with_a_wrong_terminator_is_a_bad_data_chunk_and_the_connection_stays_in_step(conn, q):
    conn.send(b"ms %s 2\r\nabc\r\nmn\r\n" % q.encode())

    assert b"CLIENT_ERROR bad data chunk\r\nMN\r\n" == conn.read_until(b"MN\r\n")
    assert b"EN\r\n" == conn.call(b"mg %s v\r\n" % q.encode())


def test_ms_whose_length_cannot_be_read_closes_the_connection(clients, q):
    for line in (b"ms %s abc\r\n" % q.encode(), b"ms %s\r\n" % q.encode(), b"ms %s -1\r\n" % q.encode(),
                 b"ms %s 1234567890123\r\n" % q.encode()):
        client = clients()
        client.send(line + b"mn\r\nmn\r\n")

        assert b"CLIENT_ERROR bad command line format\r\n" == client.line()
        assert client.is_closed(), line


def test_ms_over_the_item_limit_is_skipped_and_refused(make_server, tmp_path, q):
    config = tmp_path / "erqpy.toml"
    config.write_text("[queues.default]\nmax_item_size = 1024\n")
    srv = make_server("--config", str(config))
    client = srv.raw()
    try:
        client.send(ms(q, b"x" * 5000, "k") + ms(q, b"small") + b"mn\r\n")

        assert b"SERVER_ERROR object too large for cache\r\nHD\r\nMN\r\n" == client.read_until(b"MN\r\n")
        assert b"VA 5\r\nsmall\r\n" == client.call(b"mg %s v\r\n" % q.encode(), b"small\r\n")
    finally:
        client.close()


def test_an_over_long_ms_line_has_its_block_skipped(conn, q):
    flags = " ".join(f"O{index:030d}" for index in range(3000))  # about 96 KiB of flags
    conn.send(ms(q, b"mg x v\r\n", *flags.split()) + b"mn\r\n")

    assert b"CLIENT_ERROR line too long\r\nMN\r\n" == conn.read_until(b"MN\r\n")


def test_meta_and_text_commands_mix_on_one_connection(conn, q):
    conn.send(ms(q, b"m") + b"set %s 0 0 1\r\nt\r\n" % q.encode() + b"mn\r\nget %s\r\nmg %s v\r\n"
              % (q.encode(), q.encode()))

    assert b"HD\r\nSTORED\r\nMN\r\n" + value(q, b"m") + b"END\r\n" == conn.read_until(b"END\r\n")
    assert b"VA 1\r\nt\r\n" == conn.read_until(b"t\r\n")


def test_meta_commands_without_a_key(conn):
    conn.send(b"mg\r\nmd\r\nma\r\nme\r\nmn\r\n")

    assert b"ERROR\r\nERROR\r\nERROR\r\nCLIENT_ERROR bad command line format\r\nMN\r\n" == conn.read_until(
        b"MN\r\n")


def test_hostile_meta_requests_never_break_the_server(shared_server, clients, q):
    """Seeded random meta requests (odd flags, tokens, keys, lengths, mutated bytes): every
    one is answered or the connection closed on lost framing, never an internal error,
    and the server keeps serving."""
    import random

    rng = random.Random(15)
    words = [b"ms", b"mg", b"md", b"mn", b"me", b"ma", b"MS", b"Mg"]
    tokens = [b"v", b"q", b"k", b"b", b"f", b"s", b"t", b"c", b"h", b"l", b"u", b"O", b"Oab", b"F1",
              b"F-1", b"Fx", b"T0", b"T-1", b"T99999999999999999999999", b"MS", b"ME", b"N30", b"x",
              b"O" + b"y" * 40, b"E5", b"vv", b"\xff"]
    keys = [q.encode(), q.encode() + b"/open", q.encode() + b"/close", q.encode() + b"/abort",
            q.encode() + b"/peek", q.encode() + b"/t=1", b"Zm9v", b"!!", b"", b"a" * 300]
    started = time.monotonic()
    for _case in range(300):
        if time.monotonic() - started > 60:
            break
        word = rng.choice(words)
        parts = [word, rng.choice(keys)]
        data = None
        if word.lower() == b"ms":
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
            parts.append(rng.choice([str(len(data)).encode(), str(len(data) + 1).encode(), b"x", b"-3"]))
        parts += [rng.choice(tokens) for _ in range(rng.randrange(5))]
        request = b" ".join(part for part in parts if part) + b"\r\n" + (b"" if data is None else data + b"\r\n")
        if word.lower() != b"ms" and rng.random() < 0.3:  # an ms keeps its length: no partial block
            flip = rng.randrange(len(request))
            request = request[:flip] + bytes([rng.randrange(256)]) + request[flip + 1 :]
        client = clients()
        client.send(request + b"\r\nmn\r\n")  # a line end of its own: a mutation may drop one
        try:
            reply = client.read_until(b"MN\r\n", timeout=10)
        except ConnectionError as closed:  # allowed only after lost framing, which is said
            assert "CLIENT_ERROR" in str(closed), (request, closed)
            continue
        finally:
            client.close()
        assert b"SERVER_ERROR" not in reply, (request, reply)

    assert b"MN\r\n" == clients().call(b"mn\r\n")


def test_a_meta_pipeline_split_at_every_offset_is_answered_as_if_sent_whole(clients, q):
    """Framing split at every byte: an ms whose block holds CRLFs and meta lines, a base64
    key, return flags and quiet mode give the same replies however the bytes arrive."""
    sequence = (ms(b64(q), b"x\r\nmg y v\r\n", "b", "F5", "k", "O1") + ms(q, b"two", "q")
                + b"mg %s v f Oa\r\nmg %s s v\r\nmg %s q v\r\nme %s_none\r\nmn\r\n"
                % (b64(q).encode() + b" b", q.encode(), q.encode(), q.encode()))
    expected = (b"HD k%s b O1\r\nVA 11 f5 Oa\r\nx\r\nmg y v\r\n\r\nVA 3 s3\r\ntwo\r\nEN\r\nMN\r\n"
                % b64(q).encode())
    for offset in range(1, len(sequence)):
        client = nodelay(clients())
        client.send(sequence[:offset])
        time.sleep(0.001)  # usually two segments, so two reads
        client.send(sequence[offset:])

        assert expected == client.read_until(b"MN\r\n"), offset
        client.close()


def test_the_status_rules_hold_for_meta_commands(make_server, tmp_path, q):
    """READONLY refuses ms and md and serves mg; QUIESCENT refuses mg too, but lets an mg
    that only settles a read finish it."""
    config = tmp_path / "admin.toml"
    config.write_text("[server]\nadmin_commands = true\n")
    conn = make_server("--config", str(config)).raw()
    conn.send(ms(q, b"a") + ms(q, b"b") + b"mg %s/open v\r\n" % q.encode())
    assert b"HD\r\nHD\r\nVA 1\r\na\r\n" == conn.read_exactly(len(b"HD\r\nHD\r\nVA 1\r\na\r\n"))

    assert b"END\r\n" == conn.call(b"status readonly\r\n")
    assert b"SERVER_ERROR server is readonly\r\n" == conn.call(ms(q, b"c"))
    assert b"SERVER_ERROR server is readonly\r\n" == conn.call(b"md %s\r\n" % q.encode())
    assert b"HD s1\r\n" == conn.call(b"mg %s s\r\n" % q.encode())

    assert b"END\r\n" == conn.call(b"status quiescent\r\n")
    assert b"SERVER_ERROR server is quiescent\r\n" == conn.call(b"mg %s/peek v\r\n" % q.encode())
    assert b"HD\r\n" == conn.call(b"mg %s/close\r\n" % q.encode())

    assert b"END\r\n" == conn.call(b"status up\r\n")
    assert b"VA 1\r\nb\r\n" == conn.call(b"mg %s v\r\n" % q.encode(), b"b\r\n")
    conn.close()


def test_mg_abort_with_a_delay_gives_the_read_back_later(shared_server, conn, q):
    put(conn, q, b"retry me")
    conn.call(b"mg %s/open v\r\n" % q.encode(), b"retry me\r\n")

    assert b"HD\r\n" == conn.call(b"mg %s/abort/delay=600000\r\n" % q.encode())

    assert b"EN\r\n" == conn.call(b"mg %s v\r\n" % q.encode())
    assert (0, 1) == (queue_stat(shared_server, q, "items"), queue_stat(shared_server, q, "delayed"))
