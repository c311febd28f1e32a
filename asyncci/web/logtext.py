"""Log text as the build page shows it: lines (with a progress bar's last state), sections
(Buildkite's `--- title`, `+++`, `~~~`; GitHub Actions' `::group::` … `::endgroup::`)
with their durations, and HTML made by our own escaping (ANSI colours, links) a line at a
time, fast: a page shows a thousand lines. Pure: no I/O, no aiohttp; asyncci.js does the
same for the lines it adds live.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from html import escape, unescape

from markupsafe import Markup

from .ansi import ansi_to_html
from .durations import clock, span

_HEADER = re.compile(r"(---|\+\+\+|~~~) (.*\S.*)|::group::(.*)")
_ENDGROUP = "::endgroup::"
_TAG = re.compile(r"(<[^>]*>)")
_URL = re.compile(r"https?://[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]")


@dataclass(frozen=True)
class Line:
    """A line as shown: `number` as in the whole log (0: asyncci's marker of a cut), and
    when it arrived, in ms since the log began (None: not known)."""
    number: int
    text: str
    ms: int | None = None

    @property
    def html(self) -> Markup:
        return Markup(_html(self.text))

    @property
    def clock(self) -> str:
        return clock(self.ms)


@dataclass
class Section:
    """Lines folded under a header line, with how long they took to arrive."""
    header: Line
    title: str
    expanded: bool  # `+++`: Buildkite's section that starts open
    lines: list[Line] = field(default_factory=list)
    ended: bool = False  # by `::endgroup::`: later lines are not part of it
    end_ms: int | None = None  # when what follows it began
    open: bool = False
    duration: str = ""
    summary: Markup = Markup()
    rows: Markup = Markup()


Block = Line | Section
Shown = Markup | Section  # a run of loose lines' rows, or a section with its own


def row(line: Line, job_id: int) -> str:
    """One line's HTML (asyncci.js builds the same), escaped by our own code. Made here,
    not by a jinja macro: a macro call costs ~40 µs a line, 80 ms for 2,000 lines."""
    return f"{_opening('span', line, job_id)}{_html(line.text)}\n</span>"


def _opening(tag: str, line: Line, job_id: int) -> str:
    """A line's element up to its text: its number (a link to it), then its time."""
    if not line.number:
        return f'<{tag} class="line cut"><span class="n"></span><span class="t"></span>'
    anchor = f"j{job_id}-L{line.number}"
    return (f'<{tag} class="line" id="{anchor}"><a class="n" href="#{anchor}">{line.number}</a>'
            f'<span class="t">{line.clock}</span>')


def shown(blocks: list[Block], job_id: int) -> list[Shown]:
    """The blocks as HTML: loose lines joined in runs, sections given their summary and
    rows; the template adds only the `<details>` around them."""
    out: list[Shown] = []
    loose: list[str] = []
    for block in blocks:
        if isinstance(block, Line):
            loose.append(row(block, job_id))
            continue
        if loose:
            out.append(Markup("".join(loose)))
            loose = []
        block.summary = Markup(
            f"{_opening('summary', block.header, job_id)}<span class=\"title\">"
            f'{_html(block.title)}</span> <span class="dur">{escape(block.duration)}</span>'
            "</summary>")
        block.rows = Markup("".join(row(line, job_id) for line in block.lines))
        out.append(block)
    if loose:
        out.append(Markup("".join(loose)))
    return out


def last_state(text: str) -> str:
    """A line that a progress bar rewrote with `\\r` shows as it was left."""
    return text.rstrip("\r").rsplit("\r", 1)[-1]


def split_lines(data: bytes, first: int) -> list[tuple[int, int, str]]:
    """(number, offset in `data`, text) of each line of `data`, numbered from `first`; a
    last line without its line end is a line too."""
    out: list[tuple[int, int, str]] = []
    offset = 0
    for number, raw in enumerate(data.split(b"\n"), first):
        if offset == len(data) and out:
            break
        out.append((number, offset, last_state(raw.decode(errors="replace"))))
        offset += len(raw) + 1
    return out


def header(text: str) -> tuple[str, str] | None:
    """(kind, title) if `text` starts a section."""
    found = _HEADER.fullmatch(text)
    if found is None:
        return None
    return (found[1], found[2].strip()) if found[1] else ("::group::", found[3].strip())


def is_diff(texts: list[str], i: int) -> bool:
    """A unified diff's `--- a/x` and `+++ b/x` lines look like headers: they are not."""
    if texts[i].startswith("--- "):
        return i + 1 < len(texts) and texts[i + 1].startswith("+++ ")
    return texts[i].startswith("+++ ") and i > 0 and texts[i - 1].startswith("--- ")


def fold(lines: list[Line]) -> list[Block]:
    """Lines as they are shown: loose, or under the section header before them."""
    texts = [line.text for line in lines]
    blocks: list[Block] = []
    current: Section | None = None
    for i, line in enumerate(lines):
        if line.text == _ENDGROUP and current is not None:
            current.ended, current.end_ms, current = True, line.ms, None
            continue
        found = header(line.text)
        if found is not None and not is_diff(texts, i):
            if current is not None:
                current.end_ms = line.ms
            current = Section(line, found[1], expanded=found[0] == "+++")
            blocks.append(current)
        elif current is not None:
            current.lines.append(line)
        else:
            blocks.append(line)
    return blocks


def _html(text: str) -> str:
    """Log text as HTML: escaped by ansi_to_html, colours as spans, addresses as links. A
    printable line (most are) has no escape sequence for it to read: escaping it is all,
    and five times faster."""
    return linkify(escape(text) if text.isprintable() else ansi_to_html(text))


def linkify(html: str) -> str:
    """Make the http(s) addresses in the text of our own escaped HTML links."""
    if "http" not in html:
        return html
    parts = _TAG.split(html)
    parts[::2] = [_link_text(text) for text in parts[::2]]
    return "".join(parts)


def _link_text(escaped: str) -> str:
    if "http" not in escaped:
        return escaped
    text = unescape(escaped)  # exact: the text was escaped by html.escape, every & with it
    out, pos = [], 0
    for found in _URL.finditer(text):
        url = escape(found[0])
        out += [escape(text[pos:found.start()]),
                f'<a href="{url}" rel="nofollow noopener">{url}</a>']
        pos = found.end()
    return "".join(out) + escape(text[pos:]) if out else escaped


def decide(blocks: list[Block], target: int | None, last_open: bool, end_ms: int | None) -> None:
    """Which sections show open, and their durations: `+++` ones, the one holding the
    line a link points at, and (when `last_open`) the last, where a failed job's last
    line is or a running job's next lines go. The last section ends at `end_ms` if the
    page shows the log's end; if not, it says how long it took at least."""
    for block in blocks:
        if isinstance(block, Section):
            numbers = {block.header.number, *(line.number for line in block.lines)}
            block.open = block.expanded or target in numbers
            block.duration = _duration(block, end_ms if block is blocks[-1] else None)
    if last_open and blocks and isinstance(blocks[-1], Section) and not blocks[-1].ended:
        blocks[-1].open = True


def _duration(section: Section, end_ms: int | None) -> str:
    begun = section.header.ms
    ended = section.end_ms if section.end_ms is not None or section.ended else end_ms
    if begun is not None and ended is not None:
        return span((ended - begun) / 1000)
    last = section.lines[-1].ms if section.lines else None
    return f"≥ {span((last - begun) / 1000)}" if begun is not None and last is not None else ""


def matching(chunks: Iterable[bytes], needle: str, first: int) -> Iterator[tuple[int, str]]:
    """(number, text) of each line that holds `needle` (lower case), numbered from
    `first`. Chunks are searched whole, up to their last line end; a line longer than a
    chunk is searched a chunk at a time."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n") + 1 or len(data)
        yield from _matches(data[:cut], needle, first)
        first += data.count(b"\n", 0, cut)
        carry = data[cut:]
    if carry:
        yield from _matches(carry, needle, first)


def _matches(data: bytes, needle: str, first: int) -> Iterator[tuple[int, str]]:
    text = data.decode(errors="replace")
    low = text.lower()
    if len(low) != len(text):  # lower case changed lengths (rare letters): line by line
        for number, line in enumerate(text.split("\n"), first):
            if needle in line.lower():
                yield number, line
        return
    pos, counted = low.find(needle), 0
    while pos >= 0:
        begin = text.rfind("\n", 0, pos) + 1
        end = text.find("\n", pos)
        first += text.count("\n", counted, begin)
        counted = begin
        yield first, text[begin:] if end < 0 else text[begin:end]
        pos = -1 if end < 0 else low.find(needle, end + 1)
