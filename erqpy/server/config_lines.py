"""Where a key or a table is in a TOML file's text, so that an error names ``file:line``.

``tomllib`` returns values without positions; these helpers find them again in the text
as read (``Settings.config_text``).
"""

import difflib
import re


def _quoted(name: str) -> str:
    """A regex for one table-name component, bare or quoted."""
    return rf"(?:{re.escape(name)}|\"{re.escape(name)}\"|'{re.escape(name)}')"


def _header(text: str, table: str, prefix: bool = False):
    """The ``[table]`` header line (or with ``prefix``, any ``[table.x]`` header)."""
    dotted = r"\s*\.\s*".join(_quoted(p) for p in table.split(".", 1))
    end = r"\s*[.\]]" if prefix else r"\s*\]"
    return re.search(rf"^[ \t]*\[\[?\s*{dotted}{end}", text, re.MULTILINE)


def _line_number(text: str, match) -> int:
    return text.count("\n", 0, match.start()) + 1 if match else 0


def line_of(text: str, key: str, table: str = "") -> int:
    # The same key may be in several tables (max_items in [queues.default] and in
    # [queues.q]): look for it after the header of the table it was found wrong in.
    start, end = 0, len(text)
    if table:
        header = _header(text, table)
        if header:  # only that table's body: up to the next header
            start = header.end()
            following = re.compile(r"^[ \t]*\[", re.MULTILINE).search(text, start)
            end = following.start() if following else end
    match = re.compile(rf"^[ \t]*{re.escape(key)}\s*=", re.MULTILINE).search(text, start, end)
    if match is None:
        match = re.search(rf"^[ \t]*\[[^\]]*{re.escape(key)}[^\]]*\]", text, re.MULTILINE)
    return _line_number(text, match)


def locate(settings, key: str = "", table: str = "") -> str:
    """``file:line`` of ``key`` in ``[table]`` (or of the table's header), for errors."""
    path, text = settings.config_path, settings.config_text
    if key:
        line = line_of(text, key, table)
    else:
        line = _line_number(text, _header(text, table) or _header(text, table, prefix=True))
    return f"{path}:{line}" if path and line else path


def header_text(text: str, table: str) -> str:
    """The name in a table's first header as written: ``queue.jobs`` for ``[queue.jobs]``."""
    header = _header(text, table, prefix=True)
    if not header:
        return table
    end = text.find("]", header.end() - 1)
    return text[header.start():end].strip().lstrip("[").strip()


def did_you_mean(text: str, table: str, known) -> str:
    """`` (did you mean [queues.jobs]?)`` for a misspelled top-level table, from its header."""
    close = difflib.get_close_matches(table, list(known), n=1, cutoff=0.6)
    if not close:
        return f"; known tables: {', '.join(sorted(known))}"
    written = header_text(text, table)
    rest = written.split(".", 1)[1].strip() if "." in written else ""
    return f" (did you mean [{close[0]}{'.' + rest if rest else ''}]?)"
