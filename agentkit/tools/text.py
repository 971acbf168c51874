"""Turn untrusted bytes into bounded text, decoded as the service meant it and escaped NOWHERE here.

Escaping happens exactly once, in the master (``console.targets.records.escape_text``),
which must escape anyway because it trusts no box. An agent that escaped too made a
banner's CR LF arrive as ``\\\\r\\\\n`` (escaped twice). So the agent sends the decoded
characters themselves (CR, LF, NUL, ESC included; JSON carries them safely) and only
bounds their length. Bytes that are not valid in the text's encoding become U+FFFD.
"""

from __future__ import annotations

#: A banner, title or header value never grows past this many characters on the wire.
MAX_TEXT = 1024


def decoded(data: bytes, limit: int = MAX_TEXT, encoding: str = "utf-8") -> str:
    """``data`` decoded (invalid bytes as U+FFFD), at most ``limit`` characters, NOT escaped."""
    try:
        text = data.decode(encoding, "replace")
    except LookupError:
        text = data.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit]


def collapse(text: str, limit: int = 256) -> str:
    """Whitespace collapsed to single spaces, control characters dropped, bounded."""
    cleaned = "".join(char if ord(char) >= 0x20 and ord(char) != 0x7F else " " for char in text)
    result = " ".join(cleaned.split())
    return result if len(result) <= limit else result[:limit] + "..."
