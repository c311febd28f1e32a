"""How pages show time: one way to write a duration, everywhere (asyncci.js's `span` and
`clock` write the lines it adds live the same way), and how long ago something happened.
Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

from datetime import datetime

from ..model import utcnow

UNITS = (("d", 86400), ("h", 3600), ("m", 60))


def span(seconds: float) -> str:
    """`0.4s`, `26s`, `3m 05s`, `2h 04m`: a duration as people read it; whole seconds are
    counted as a stopwatch does, not rounded."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole // 60 % 60:02d}m"


def clock(ms: int | None) -> str:
    """A log line's time since the log began, as a stopwatch shows it: 1:05, 1:02:03."""
    if ms is None:
        return ""
    seconds = ms // 1000
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def seconds_between(start: str | datetime | None, end: str | datetime | None) -> float | None:
    """Seconds from `start` to `end` (now when None); None when it never started."""
    if start is None:
        return None
    begin = datetime.fromisoformat(start) if isinstance(start, str) else start
    stop = utcnow() if end is None else datetime.fromisoformat(end) if isinstance(end, str) else end
    return (stop - begin).total_seconds()


def duration(start: str | None, end: str | None) -> str:
    """How long from `start` to `end` (so far, when None); nothing if it never started."""
    seconds = seconds_between(start, end)
    return "" if seconds is None else span(seconds)


def ago(value: str | None) -> str:
    """`3m ago`, in the largest whole unit `span` uses."""
    seconds = seconds_between(value or None, None)
    if seconds is None:
        return ""
    for unit, size in UNITS:
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{max(0, int(seconds))}s ago"
