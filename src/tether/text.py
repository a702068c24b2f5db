"""Text from models, tools and rules made safe to show a human.

A tool result or a model's answer is controlled by whoever wrote the data the agent read. Printed
raw, an escape sequence in it can erase or hide the line an approver is reading, and a bidi
override can make ``refund 10`` read as something else. :func:`visible` turns every such
character into a visible escape (``\\x1b``, ``\\u202e``) so the human sees what is there.
"""

from __future__ import annotations

import re

# bidi controls: embeddings and overrides U+202A to U+202E, isolates U+2066 to U+2069, marks
_BIDI = "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# C0 controls, DEL, C1 controls, the line/paragraph separators and the bidi controls.
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")
_UNSAFE_KEEPING_LINES = re.compile(f"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029{_BIDI}]")


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str, *, newlines: bool = False) -> str:
    """``text`` with control, bidi and separator characters replaced by visible escapes.

    ``newlines=True`` keeps ``\\n`` for a block meant to span lines; nothing else is kept (not
    even a tab or a carriage return, which can overwrite what came before on the line).
    """
    pattern = _UNSAFE_KEEPING_LINES if newlines else _UNSAFE
    return pattern.sub(_escaped, text)
