"""The one sanitiser for everything a box or a scanned service says.

Why: text from a box (its hello, stderr, error texts, records) and from scanned services
(banners, titles, certificate names) ends up on the operator's terminal: in ``fleetscan``'s
output and in the console. A single ESC, CSI, OSC (an OSC 52 writes the clipboard), C1
control, BEL or bidi override there is an attack on the operator. So the master applies
these functions twice: before storage (what the store holds is already printable) and at
every terminal sink (what was stored by an older version, or by another master, is not
trusted either).

Everything that is not printable by ``str.isprintable`` (C0 and C1 controls, DEL, format
characters such as the bidi overrides and isolates, line and paragraph separators, lone
surrogates, unassigned code points) becomes a visible escape (``\\x1b``, ``\\u202e``); the
rest, including any non-ASCII letter, stays as it is. Printable text passes through one
C-level check and is returned untouched.
"""

from __future__ import annotations

import re

#: Longest text field we store (banners, titles, error texts are not trusted); longer text is cut.
MAX_TEXT = 4096

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _cut(text: str, escaped: str, limit: int | None) -> str:
    if limit is not None and (len(text) > limit or len(escaped) > limit):
        return escaped[: max(0, limit - 3)] + "..."
    return escaped


def escape_text(text: str, limit: int = MAX_TEXT) -> str:
    """Printable, bounded, reversible text for storage: control and format characters become
    ``\\xNN``/``\\uNNNN``, newlines ``\\n``, and backslashes are doubled, so an escaped sequence
    cannot be forged by the sender."""
    if len(text) <= limit and "\\" not in text and text.isprintable():
        return text  # the common case, checked in C: nothing to escape
    out: list[str] = []
    for ch in text[: limit + 1]:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(_escape_char(ch))
    return _cut(text, "".join(out), limit)


def safe_line(text: object, limit: int | None = MAX_TEXT) -> str:
    """One printable line: every non-printable character (newlines included) escaped; bounded."""
    value = text if isinstance(text, str) else str(text)
    if value.isprintable():
        return _cut(value, value, limit)
    head = value if limit is None else value[: limit + 1]
    return _cut(value, "".join(ch if ch.isprintable() else _escape_char(ch) for ch in head), limit)


def for_terminal(text: object) -> str:
    """Text for a terminal that may span lines: each line made safe, the newlines kept (a tab too)."""
    value = text if isinstance(text, str) else str(text)
    if value.isprintable():
        return value
    return "\n".join(
        line if line.isprintable() else "".join(
            ch if ch.isprintable() or ch == "\t" else _escape_char(ch) for ch in line
        )
        for line in value.split("\n")
    )


def _json_escape(match: re.Match[str]) -> str:
    out = []
    for ch in match.group(0):
        code = ord(ch)
        if code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out)


_ANY = re.compile(r"[\s\S]")


def json_for_terminal(text: str) -> str:
    """JSON text (lines of it) made terminal-safe and still the same JSON: a non-printable
    character can only sit inside a string there, where ``\\uXXXX`` means the same character."""
    if text.isprintable():
        return text
    return "\n".join(
        line if line.isprintable() else "".join(
            ch if ch.isprintable() else _ANY.sub(_json_escape, ch) for ch in line
        )
        for line in text.split("\n")
    )
