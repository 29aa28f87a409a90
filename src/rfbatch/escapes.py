"""Text made safe for a terminal: control characters and undecodable bytes shown as escapes.

A file name may hold ESC, BEL or a newline; printed raw it could retitle or clear the operator's
terminal, or forge a line of a report or a log. Everything a person reads (the CLI's output and
console log lines) goes through :func:`printable`.
"""

from __future__ import annotations

import re

# Lone surrogates: the undecodable bytes of a file name, as the file system decoder kept them.
SURROGATE = re.compile(r"[\ud800-\udfff]")
# Control characters (C0, DEL, C1) and lone surrogates.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The same, less the newline: for text that is several lines by nature (a traceback).
_UNPRINTABLE_IN_LINES = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if 0xDC80 <= code <= 0xDCFF:
        code -= 0xDC00  # a byte that was not UTF-8, as the file system decoder kept it
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` safe for a terminal: control characters and undecodable bytes as escapes
    (``\\x1b`` shows what is there); newlines too unless ``keep_newlines``."""
    pattern = _UNPRINTABLE_IN_LINES if keep_newlines else _UNPRINTABLE
    return pattern.sub(_escape, str(text))
