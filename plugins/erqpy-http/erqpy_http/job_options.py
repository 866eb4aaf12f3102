"""The query options of a job post (``POST /q/NAME``, ``PUT /q/NAME``, ``POST /qb/NAME``):
``ttl``, presque's ``delayed``, and ``priority``; presque's ``uniq`` is refused, not
ignored, so that no client relies on it silently."""

from erqpy.storage.items import now_ms
from erqpy.storage.levels import DEFAULT_PRIORITY, LOWEST_PRIORITY

from erqpy_http.web import HttpError

MAX_TTL = 100 * 365 * 24 * 3600  # seconds


def expiry(request) -> int:
    if request.arg("uniq") is not None:
        raise HttpError(400, "uniq is not supported")
    ttl = request.int_arg("ttl", 0, minimum=0)
    if ttl > MAX_TTL:
        # The journal stores expiry times in 64 bits; far beyond any real need anyway.
        raise HttpError(400, f"ttl must be at most {MAX_TTL} seconds")
    return now_ms() + ttl * 1000 if ttl else 0


def schedule(request) -> dict:
    """``ops.put``'s keywords from presque's ``delayed`` (the Unix time in seconds before
    which the job is not handed out) and ``priority`` (0 most urgent to 9; default 5)."""
    options = {}
    delayed = request.int_arg("delayed", 0, minimum=0)
    if delayed:
        options["due_ms"] = delayed * 1000
    if request.arg("priority") not in (None, ""):
        priority = request.int_arg("priority", DEFAULT_PRIORITY, minimum=0)
        if priority > LOWEST_PRIORITY:
            raise HttpError(400, f"priority must be at most {LOWEST_PRIORITY}")
        options["priority"] = priority
    return options
