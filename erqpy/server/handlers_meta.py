"""Handler part: memcached's meta protocol (``ms``, ``mg``, ``md``, ``mn``, ``me``, ``ma``)
on the text port, an erqpy extension (PROTOCOL.md "Meta protocol"), translated to
``erqpy.server.ops`` as the text commands are.

What each command means for a queue: ``ms`` enqueues, ``mg`` with ``v`` dequeues (the
Kestrel options ``/t= /open /close /abort /peek`` work in its key), ``mg`` without ``v``
looks at the head without taking it, ``md`` deletes the queue (as ``delete`` does), ``me``
is a line of the queue's stats, ``ma`` is refused as memcached refuses arithmetic on a
value that is not a number.  Replies, flag syntax and errors are memcached 1.6's
(``tests/protocol/test_meta_vs_memcached.py`` compares them with a real memcached).

RELOADABLE, as a part of ``handlers`` (``reloader``): code and constants only.
"""

import binascii
from base64 import b64decode

from erqpy.errors import ClientError
from erqpy.server import ops
from erqpy.server.handlers_common import ERROR, MAX_EXPTIME, MAX_FLAGS, SLASH, expires_at, set_options
from erqpy.server.handlers_get import (
    LARGE_VALUE, GetOptions, check_options, settle, take_plain, take_with_options,
)
from erqpy.storage.pqueue import now_ms

HD = b"HD"
EN = b"EN"
NF = b"NF"
NS = b"NS"
MN = b"MN\r\n"
HD_LINE = b"HD\r\n"
NS_LINE = b"NS\r\n"
CRLF = b"\r\n"
TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"

#: The flags each command serves, as byte values.  A flag memcached knows and a queue has
#: no use for (CAS, leases, vivify, recache, ...) is answered as an unknown one is.
MG_FLAGS = frozenset(b"bcfhklOqstuv")
MS_FLAGS = frozenset(b"bFkMOqT")
MD_FLAGS = frozenset(b"bkOq")
ME_FLAGS = frozenset(b"b")
#: memcached's longest opaque flag, its ``O`` included.
MAX_OPAQUE = 32
_V, _Q, _B, _K, _O = b"v"[0], b"q"[0], b"b"[0], b"k"[0], b"O"[0]


def _flags(tokens, allowed, invalid="invalid flag"):
    """``{flag: token}`` (flag a byte value, token the bytes after it), in request
    order, which is the order of the returned flags."""
    # Built whole and checked after: every get carries flags, and the loop that finds
    # which error comes first runs only when there is one.  (A loop, not a dict
    # comprehension: that is a function call of its own before Python 3.12.)
    flags: dict = {}
    for token in tokens:
        flags[token[0]] = token[1:]
    if len(flags) != len(tokens) or not allowed.issuperset(flags) or len(flags.get(_O, b"")) >= MAX_OPAQUE:
        _refuse(tokens, allowed, invalid)
    return flags


def _refuse(tokens, allowed, invalid):
    """Raise the error of the first bad flag, in request order, as memcached does."""
    seen = set()
    for token in tokens:
        flag = token[0]
        if flag not in allowed:
            raise ClientError(invalid)
        if flag in seen:
            raise ClientError("duplicate flag" if invalid == "invalid flag" else invalid)
        if flag == _O and len(token) > MAX_OPAQUE:
            raise ClientError("opaque token too long")
        seen.add(flag)


def _key(key, flags):
    """The queue key as erqpy reads it: ``b`` means the key was sent base64-encoded
    (the hot paths test ``b`` themselves before calling)."""
    if _B not in flags:
        return key
    try:
        return b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError("error decoding key") from None


def _returned(key, flags, item=None, opened=False):
    """The return flags of a reply, in request order (memcached puts ``b`` after ``k``).
    One loop without calls: meta-memcache asks for ``f t l h`` on every get."""
    if not flags:
        return b""
    # The clock is read only for the flags that need it.
    now = now_ms() if item is not None and (116 in flags or 108 in flags) else 0
    out = []
    for flag, token in flags.items():
        if flag == _O:
            out.append(b"O" + token)
        elif flag == _K:
            out.append(b"k" + key)
            if _B in flags:
                out.append(b"b")
        elif item is None:
            continue
        elif flag == 102:  # f: the client flags
            out.append(b"f%d" % item.flags)
        elif flag == 116:  # t: seconds until it expires, -1 for never
            expires = item.expires_ms
            out.append(b"t%d" % max(0, (expires - now + 999) // 1000) if expires else b"t-1")
        elif flag == 108:  # l: seconds since it was enqueued (never accessed before)
            out.append(b"l%d" % max(0, (now - item.added_ms) // 1000))
        elif flag == 104:  # h: handed out before this read (a reliable read given back)
            out.append(b"h1" if item.deliveries > (1 if opened else 0) else b"h0")
        elif flag == 115:  # s: the size
            out.append(b"s%d" % item.payload_size)
        elif flag == 99:  # c: the item id, the cas of ``gets``
            out.append(b"c%d" % item.id)
        # v, q, u, b: no return flag of their own
    return b" " + b" ".join(out) if out else b""


def _status(code, key, flags, quiet_codes, item=None):
    if not flags:
        return code + CRLF
    if _Q in flags and code in quiet_codes:
        return b""
    return code + _returned(key, flags, item) + CRLF


# -- ms: enqueue -------------------------------------------------------------------------


def _number(token, bad="bad command line format"):
    digits = token[1:] if token[:1] == b"-" else token
    if not digits.isdigit() or len(digits) > 20:
        raise ClientError(bad)
    return int(token)


def cmd_ms(conn, request):
    args = request.args  # the parser framed it: a key and a length are there
    flags = _flags(args[2:], MS_FLAGS)
    raw = args[0] if _B not in flags else _key(args[0], flags)
    client_flags = ttl = 0
    if flags:
        token = flags.get(70)  # F
        if token is not None and token != b"0":
            client_flags = _number(token)
            if not 0 <= client_flags <= MAX_FLAGS:
                raise ClientError("bad command line format")
        token = flags.get(84)  # T
        if token is not None and token != b"0":
            ttl = _number(token, "bad token in command line format")
            if ttl > MAX_EXPTIME:
                raise ClientError("bad token in command line format")
        mode = flags.get(77)  # M: only set is an enqueue
        if mode is not None and mode not in (b"S", b"s"):
            raise ClientError("invalid mode for ms M token")
    options = set_options(raw) if SLASH in raw else None  # set's /delay= /at= /pri=
    state = conn.state
    name = raw if options is None else options[0]
    # The dispatch checked WRITE; an alias (ops.queue_for_write) only when there are aliases.
    queue = ops.queue_for_write(state, name) if state.settings.aliases else state.collection.get_or_create(name)
    state.stats.cmd_set += 1
    if request.too_large:
        return TOO_LARGE
    now = now_ms()
    expires = 0 if ttl == 0 else expires_at(ttl, now)
    if options is None:
        stored = ops.put(state, queue, request.data, client_flags, expires, now)
    else:
        _name, delay_ms, due_ms, priority = options
        stored = ops.put(state, queue, request.data, client_flags, expires, now,
                         delay_ms=delay_ms, due_ms=due_ms, priority=priority)
    if _O in flags or _K in flags or _Q in flags:
        return _status(HD if stored else NS, args[0], flags, (HD,))
    return HD_LINE if stored else NS_LINE


# -- mg: dequeue, or look ------------------------------------------------------------------


def _settles_only(opts) -> bool:
    return opts.abort or (opts.close and not opts.open)


def only_settles_read(request) -> bool:
    """An ``mg`` whose key only settles a read (``/close``, ``/abort``): QUIESCENT lets
    it finish reads handed out already (``handlers._only_settles_reads`` for ``get``)."""
    args = request.args
    if not args:
        return False
    try:
        raw = _key(args[0], _flags(args[1:], MG_FLAGS))
        return SLASH in raw and _settles_only(GetOptions(raw))
    except ClientError:
        return False


def cmd_mg(conn, request):
    args = request.args
    if not args:
        return ERROR  # memcached's reply to a meta command without a key
    key = args[0]
    flags = _flags(args[1:], MG_FLAGS)
    raw = key if _B not in flags else _key(key, flags)
    opts = GetOptions(raw) if SLASH in raw else None
    if opts is not None and _settles_only(opts):
        # With v the client asked for a value and none is handed out: a miss, as ``get
        # q/close`` is END (a client's get takes HD for a protocol error).  Without v,
        # HD says a read was settled.
        settled = settle(conn, opts)
        return _status(HD if settled and _V not in flags else EN, key, flags, (EN,))
    if _V not in flags:
        # Without a value nothing is taken: an item removed and not sent would be lost.
        if opts is None:
            opts = GetOptions(raw)
        elif opts.open:
            raise ClientError("mg with /open hands out the item: it needs the v flag")
        opts.peek = True
    if opts is None:
        item = take_plain(conn, raw)
    else:
        check_options(conn, opts, {})
        item = take_with_options(conn, opts)
    if item is None:
        return _status(EN, key, flags, (EN,))
    if _V not in flags:
        return _status(HD, key, flags, (), item)
    data = item.data
    if len(flags) == 1:  # v alone: nothing to return but the value
        head = b"VA %d\r\n" % len(data)
    elif len(flags) == 2 and 102 in flags:  # v f, what a text get returns: the usual case
        head = b"VA %d f%d\r\n" % (len(data), item.flags)
    else:
        head = b"VA %d%s\r\n" % (len(data), _returned(key, flags, item, opts is not None and opts.open))
    if len(data) > LARGE_VALUE:
        return [head, data, CRLF]  # never copied: the connection sends the parts
    return head + data + CRLF


# -- md, mn, me, ma ----------------------------------------------------------------------


def cmd_md(conn, request):
    """``md <queue>``: delete the queue, as ``delete`` does (HD), NF when there is none."""
    args = request.args
    if not args:
        return ERROR
    flags = _flags(args[1:], MD_FLAGS, "invalid or duplicate flag")
    state = conn.state
    deleted = ops.delete(state, state.collection.lookup(_key(args[0], flags)))
    return _status(HD if deleted else NF, args[0], flags, (HD,))


def cmd_mn(conn, request):
    return MN


def cmd_me(conn, request):
    """``me <queue>``: the queue's stats fields as ``ME <key> name=value ...``, or EN."""
    args = request.args
    if not args:
        raise ClientError("bad command line format")
    flags = _flags(args[1:], ME_FLAGS, "bad command line format")
    state = conn.state
    queue = state.collection.lookup(_key(args[0], flags))
    if queue is None:
        return b"EN\r\n"
    fields = ops.queue_stats(state, queue)
    return b"ME %s %s\r\n" % (args[0], " ".join(f"{k}={v}" for k, v in fields.items()).encode())


def cmd_ma(conn, request):
    """Arithmetic: a queue is not a number.  NF for a missing queue, as memcached."""
    args = request.args
    if not args:
        return ERROR
    flags = {token[0]: token[1:] for token in args[1:]}
    if conn.state.collection.lookup(_key(args[0], flags)) is None:
        return b"NF\r\n"
    raise ClientError("cannot increment or decrement non-numeric value")
