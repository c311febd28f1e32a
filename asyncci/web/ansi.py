"""Log text → safe HTML: escaped, with ANSI SGR colours as spans and every other escape
sequence dropped. Pure; the browser side (static/asyncci.js) does the same for live lines."""

from __future__ import annotations

import re
from html import escape

_ESCAPE = re.compile(
    r"\x1b\[([0-9;?]*)([A-Za-z])"  # CSI: colours (m) and cursor movements
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window titles, hyperlinks
    r"|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]"  # other escapes and control characters
)
COLOURS = {30: "black", 31: "red", 32: "green", 33: "yellow", 34: "blue", 35: "magenta",
           36: "cyan", 37: "white"}


def _classes(codes: list[int], current: set[str]) -> set[str]:
    classes = set(current)
    for code in codes or [0]:
        if code == 0:
            classes = set()
        elif code == 1:
            classes.add("b")
        elif code in (22, 39):
            classes -= {"b"} if code == 22 else {c for c in classes if c.startswith("c-")}
        elif 30 <= code <= 37 or 90 <= code <= 97:
            classes = {c for c in classes if not c.startswith("c-")}
            classes.add(f"c-{COLOURS[code % 60 if code >= 90 else code]}")
    return classes


def ansi_to_html(text: str) -> str:
    """One line (or more) of log text as HTML that shows its colours and runs nothing."""
    out, classes, pos = [], set[str](), 0
    open_span = False
    for match in _ESCAPE.finditer(text):
        out.append(escape(text[pos:match.start()]))
        pos = match.end()
        if match.group(2) != "m":
            continue  # cursor moves, clears, titles: meaningless in a log
        codes = [int(c) for c in match.group(1).split(";") if c.isdigit() and len(c) < 4]
        classes = _classes(codes, classes)
        if open_span:
            out.append("</span>")
            open_span = False
        if classes:
            out.append(f'<span class="{" ".join(sorted(classes))}">')
            open_span = True
    out.append(escape(text[pos:]))
    if open_span:
        out.append("</span>")
    return "".join(out)
