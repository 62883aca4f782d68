r"""User text made safe to show: on a terminal, and in a matplotlib figure.

    >>> print(shown("shoe\x1b[2J.png"))      # a file name that would clear the screen
    shoe\x1b[2J.png
    >>> print(plot_text("$\\frac{1}{0}$"))   # a class name that mathtext would parse
    \$\frac{1}{0}\$

Class names, image and data file names, folder names found by listing a folder: anything a user
(or whoever named their files) wrote goes through `shown` before it is printed, so a terminal
escape sequence, a carriage return that overwrites the line, a bidirectional override that
reorders it, or bytes that are not UTF-8 are printed as visible escapes (\x1b, \r, \u202e,
\xff), never acted on. `--json` output needs none of this: `json.dumps` escapes control
characters itself.

In figures, `plot_text` escapes the same characters (a figure has no use for them either; most
would be drawn as missing glyphs, with a warning) and `$`, the only character matplotlib treats
specially in plain text: it parses text between two `$` as mathtext, where a bad formula raises
at draw time, after a run has trained.
"""

from __future__ import annotations

import unicodedata

# What repr() writes for the common control characters; the rest become \xNN, \uNNNN.
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Unicode categories a terminal acts on or cannot show: controls (C0, DEL, C1), format characters
# (bidirectional overrides, zero-width joiners), line and paragraph separators, and surrogates
# (the bytes of a file name that is not UTF-8, as Python decodes them).
_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def shown(text: object) -> str:
    """`text` with every control or invisible formatting character written as an escape.

    Backslashes stay as they are: messages often quote names with repr() already, and doubling
    them again would garble those; what matters is that nothing reaches the terminal raw."""
    return "".join(_escape(ch) for ch in str(text))


def plot_text(text: object) -> str:
    """`text` for a matplotlib Text: control characters escaped as `shown` does, and every `$`
    as `\\$`, so matplotlib draws it as plain text (an original `\\$` included), never as
    mathtext."""
    return shown(text).replace("$", r"\$")


def _escape(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    if unicodedata.category(ch) not in _UNSAFE:
        return ch
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, decoded with surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
