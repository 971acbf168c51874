"""Make untrusted bytes safe to carry: decoded, control characters escaped, bounded."""

from __future__ import annotations

#: A banner, title or header value never grows past this many characters on the wire.
MAX_TEXT = 1024


def printable(data: bytes, limit: int = MAX_TEXT) -> str:
    """UTF-8 with replacement; every control character (and DEL) escaped as ``\\xNN``/``\\n``/``\\r``/``\\t``."""
    text = data.decode("utf-8", "replace")
    out = []
    for char in text:
        code = ord(char)
        if char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
            out.append("\\x%02x" % code)
        elif char == "\\":
            out.append("\\\\")
        else:
            out.append(char)
    result = "".join(out)
    return result if len(result) <= limit else result[:limit] + "..."


def collapse(text: str, limit: int = 256) -> str:
    """Whitespace collapsed to single spaces, control characters dropped, bounded."""
    cleaned = "".join(char if ord(char) >= 0x20 and ord(char) != 0x7F else " " for char in text)
    result = " ".join(cleaned.split())
    return result if len(result) <= limit else result[:limit] + "..."
