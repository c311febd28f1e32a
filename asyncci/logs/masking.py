"""Secret masking: no secret reaches a log file, even split across chunks, wrapped over
lines or base64-encoded. Pure: bytes in, bytes out."""

from __future__ import annotations

import base64
import bisect
import re
from collections.abc import Collection, Sequence
from functools import cached_property
from itertools import islice

from ..config import MIN_SECRET

MASK = b"***"
_LINE_END = re.compile(rb"[\r\n]")
_NOT_LINE_END = re.compile(rb"[^\r\n]")
_LINE_ENDS = re.compile(rb"[\r\n]+")
_PIECES = re.compile(rb"([^\r\n]+)([\r\n]*)")


def secret_forms(secret: str) -> set[bytes]:
    """The byte strings that reveal `secret`: itself, each line of a multi-line one (printed
    alone, a line gives away as much; GitHub Actions masks them too), and the stable middle
    of its base64 encoding at each of the three alignments (standard and urlsafe). Line ends
    around a secret are no part of it: a value read from a file often ends with one."""
    raw = secret.encode().strip(b"\r\n")
    forms = {raw} | {line.strip() for line in _LINE_ENDS.split(raw)}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)
        # The edge characters mix in bits of whatever surrounds the secret: not stable.
        stable = encoded[-(-8 * shift // 6):(8 * (shift + len(raw))) // 6]
        forms |= {stable, stable.replace(b"+", b"-").replace(b"/", b"_")}
    # The floor the config puts on secrets: a shorter form would garble the log.
    return {form for form in forms if len(form) >= MIN_SECRET}


def _pattern(form: bytes) -> bytes:
    """`form` as a regex that also matches it wrapped over lines, as `base64` wraps at 76
    columns from whatever column the secret's part begins at, and with CRLF line ends."""
    out = []
    for text, ends in _PIECES.findall(form):
        out.append(rb"(?:\r?\n)?".join(re.escape(text[i:i + 1]) for i in range(len(text))))
        out.append(ends.replace(b"\r\n", b"\n").replace(b"\r", rb"\r").replace(b"\n", rb"\r?\n"))
    return b"".join(out)


def masking_pattern(forms: Collection[bytes]) -> re.Pattern[bytes]:
    """One alternation of all `forms` (at least one), longest first: where one secret begins
    another, the longer one is masked whole."""
    ordered = sorted(forms, key=lambda f: (len(_unwrap(f)), f), reverse=True)
    return re.compile(b"|".join(map(_pattern, ordered)))


def _unwrap(data: bytes) -> bytes:
    return data.replace(b"\n", b"").replace(b"\r", b"")


class _Unwrapped:
    """A chunk without its line ends, where a form is one `find` away however it was
    wrapped, and the way back to the chunk's offsets."""

    def __init__(self, data: bytes) -> None:
        self.data, self.text = data, _unwrap(data)

    def offset(self, at: int) -> int:
        """The chunk's offset of `text[at]`."""
        return at + bisect.bisect_right(self._before, at)

    def at(self, offset: int) -> int:
        """The index in `text` of the first byte at or after `offset` that is no line end."""
        return offset - bisect.bisect_left(self._ends, offset)

    @cached_property
    def _ends(self) -> list[int]:
        """Offsets of the chunk's line ends: looked for only once a form is found."""
        return [m.start() for m in _LINE_END.finditer(self.data)]

    @cached_property
    def _before(self) -> list[int]:
        """For each line end, how many other bytes come before it."""
        return [end - n for n, end in enumerate(self._ends)]


class Masker:
    """Replaces secrets by `***` in a byte stream, as if it had seen the stream whole.

    At a chunk border it holds back only an end of the data that begins some secret's
    form, so a live log never stalls on a line that merely ended."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._forms = {f for s in secrets if s for f in secret_forms(s)}
        # Each form is looked for without its line ends, in the text without its own.
        self._keys = sorted({_unwrap(f) for f in self._forms})
        self._short = {k[:n] for k in self._keys for n in range(1, min(len(k), 8))}
        # A match has at most a CRLF after each byte of its form: none, nor its start, is
        # this long.
        self._reach = 3 * max(map(len, self._forms), default=0)
        self._held = b""

    @property
    def held(self) -> int:
        return len(self._held)

    def feed(self, chunk: bytes) -> bytes:
        if not self._keys:
            return chunk
        data = self._held + chunk if self._held else chunk
        return self._mask(data, *self._unfinished(data))

    def flush(self) -> bytes:
        return self._mask(self._held, 0, 0) if self._held else b""

    @cached_property
    def _pattern(self) -> re.Pattern[bytes]:
        # Compiled once a key is found (most jobs never print a secret): for a long secret,
        # such as a private key, compiling takes a good part of a second.
        return masking_pattern(self._forms)

    def _mask(self, data: bytes, held: int, pending: int) -> bytes:
        """Mask `data` but for its last `held` bytes (`pending` of them no line ends),
        which are kept for the next chunk."""
        view = _Unwrapped(data)
        text, end = view.text, len(view.text)
        safe = end - pending  # a match starting here or later might grow
        # bytes.find per key is ~10x faster than a regex scan of an alternation; the
        # pattern then picks the longest form at the leftmost start, as a whole scan would.
        out, pos = [], 0
        found = [i if (i := text.find(k)) >= 0 else end for k in self._keys]
        while (start := min(found)) < safe:
            at = view.offset(start)
            if (match := self._pattern.match(data, at)) is None:
                resume = start + 1  # line ends no form has there: two in a row, a lone CR
            else:
                out += [data[pos:at], MASK]
                pos = match.end()
                resume = view.at(pos)
            found = [i if i >= resume else j if (j := text.find(k, resume)) >= 0 else end
                     for i, k in zip(found, self._keys)]
        cut = max(pos, len(data) - held)
        out.append(data[pos:cut])
        self._held = data[cut:]
        return b"".join(out)

    def _unfinished(self, data: bytes) -> tuple[int, int]:
        """The longest end of `data` whose bytes other than line ends are a proper prefix
        of a key: its length, and how many of its bytes are no line ends. A line that
        ended is held too: base64 wraps a secret's encoding over lines."""
        tail = data[-self._reach:]
        text = _unwrap(tail)
        end = best = len(text)
        for key in self._keys:  # an end of 8 bytes or more: find where each key's head is
            at = text.find(key[:8], max(0, end - len(key) + 1))
            while 0 <= at < best and not key.startswith(text[at:]):
                at = text.find(key[:8], at + 1)
            best = at if 0 <= at < best else best
        pending = next((n for n in range(min(7, end), end - best, -1)
                        if text[end - n:] in self._short), end - best)  # or a shorter end
        if not pending:
            return 0, 0
        last = next(islice(_NOT_LINE_END.finditer(tail[::-1]), pending - 1, None))
        return last.end(), pending

