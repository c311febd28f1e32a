"""Job logs: masking across chunk borders, the size cap, crash consistency, waiting, and the
sidecar of arrival times."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import asyncci
from asyncci.logs import Logs
from asyncci.logs.masking import Masker, masking_pattern, secret_forms
from asyncci.logs.timeline import MARK, STRIDE, TICK_MS, Mark
from tests.support.wait import until_sync

SECRET = "hunter2-very-secret"
MULTILINE = "s3cr3t line\nnext line"
MARKER = re.compile(rb"\n\[asyncci: (\d+) bytes cut from the middle of this log\]\n")


def mask_in_chunks(secrets: list[str], text: bytes, cuts: list[int]) -> bytes:
    masker = Masker(secrets)
    out, last = [], 0
    for cut in sorted(set(cuts)) + [len(text)]:
        out.append(masker.feed(text[last:cut]))
        last = cut
    return b"".join(out) + masker.flush()


def mask_whole(secrets: list[str], text: bytes) -> bytes:
    """The reference: one regex over the whole text, longest form first."""
    return masking_pattern({f for s in secrets for f in secret_forms(s)}).sub(b"***", text)


def test_a_secret_is_masked_wherever_a_chunk_border_falls() -> None:
    text = f"before {SECRET} after\n".encode()
    for cut in range(len(text) + 1):
        assert mask_in_chunks([SECRET], text, [cut]) == b"before *** after\n", cut
    for cut in range(len(text) - 1):  # three chunks: the secret cut twice
        assert mask_in_chunks([SECRET], text, [cut, cut + 2]) == b"before *** after\n", cut


def test_multiline_secrets_and_crlf() -> None:
    for printed in (MULTILINE, MULTILINE.replace("\n", "\r\n")):
        text = f"x {printed} y".encode()
        for cut in range(len(text) + 1):
            assert mask_in_chunks([MULTILINE], text, [cut]) == b"x *** y"


def test_base64_forms_at_every_alignment() -> None:
    for prefix in (b"", b"x", b"xx", b"user:"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            printed = encode(prefix + SECRET.encode() + b"\n")
            text = b"token: " + printed + b"\n"
            for cut in range(len(text) + 1):
                out = mask_in_chunks([SECRET], text, [cut])
                assert b"***" in out and printed not in out
                # What stays is the prefix, the newline and the two unstable edges.
                hidden = len(printed) - (len(out) - len(b"token: ***\n"))
                assert hidden >= 8 * len(SECRET) // 6 - 1


def decodings(masked: bytes) -> list[bytes]:
    """What the base64 runs of `masked`, line ends taken out, decode to at each alignment."""
    out = []
    for run in re.findall(rb"[A-Za-z0-9+/]+", masked.replace(b"\r", b"").replace(b"\n", b"")):
        for skip in range(4):
            out.append(base64.b64decode(run[skip:][: len(run[skip:]) // 4 * 4], validate=True))
    return out


@pytest.mark.parametrize("length", [75, 200])
@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
def test_base64_wrapped_at_76_columns_cannot_be_decoded(length: int, line_end: bytes) -> None:
    rng = random.Random(length)
    secret = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_") for _ in range(length))
    for prefix in ("", "x", "xy", "user:"):  # all three alignments, the wrap at any column
        printed = subprocess.run(["base64"], input=(prefix + secret).encode(),
                                 capture_output=True, check=True).stdout
        assert printed.count(b"\n") > 1  # wrapped, as `base64` does by default
        text = b"$ base64 token:\n" + printed.replace(b"\n", line_end) + b"$ done\n"
        masker = Masker([secret])
        out = b"".join(map(masker.feed, chunks(text, rng, 9))) + masker.flush()
        assert b"***" in out and out.startswith(b"$ base64 token:\n") and out.endswith(b"$ done\n")
        for decoded in decodings(out):
            assert not any(secret[i:i + 8].encode() in decoded for i in range(length - 7))


def test_each_line_of_a_multiline_secret_is_masked_alone() -> None:
    secret = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n\nab\n  \nAQEFAASCBKcwggSjAgEAAoIB\n"
    for line_end in (b"\n", b"\r\n"):
        text = (b"line 2: MIIEvQIBADANBgkqhkiG9w0B" + line_end + b"last: AQEFAASCBKcwggSjAgEAAoIB"
                + line_end + b"ab stays, and so do blank lines" + line_end * 2)
        for cut in range(len(text) + 1):
            assert mask_in_chunks([secret], text, [cut]) == (
                b"line 2: ***" + line_end + b"last: ***" + line_end
                + b"ab stays, and so do blank lines" + line_end * 2)


def test_a_secret_that_begins_another_masks_the_longer_one_whole() -> None:
    secrets = ["abcdefgh", "abcdefgh-and-more"]
    text = b"1 abcdefgh-and-more 2 abcdefgh 3 abcdefgh-and"
    for cut in range(len(text) + 1):
        assert mask_in_chunks(secrets, text, [cut]) == b"1 *** 2 *** 3 ***-and"


def test_only_a_possible_start_of_a_secret_is_held_back() -> None:
    masker = Masker([SECRET, MULTILINE])
    longest = max(len(f) for s in (SECRET, MULTILINE) for f in secret_forms(s))
    assert masker.feed(b"progress 10%\n") == b"progress 10%\n"  # nothing waits for more
    assert masker.feed(b"token hunt") == b"token "  # "hunt" may begin the secret
    assert masker.held == 4
    assert masker.feed(b"er2-very-secret!") == b"***!" and masker.held == 0
    assert masker.feed(b"token hunt\r") == b"token " and masker.held == 5  # a wrap may follow
    assert masker.feed(b"\nmore") == b"hunt\r\nmore" and masker.held == 0
    rng = random.Random(7)
    for _ in range(2000):
        masker.feed(bytes(rng.choice(b"hunter2-vsc3 \nabAB") for _ in range(rng.randint(0, 40))))
        assert masker.held < 3 * longest  # a CRLF at most between each two bytes of a form


def test_no_secrets_pass_everything_through_unchanged() -> None:
    plain = Masker(["", ""])
    chunk = bytes(range(256)) * 300
    assert plain.feed(chunk) is chunk and plain.held == 0 and plain.flush() == b""


def wrapped(encoded: bytes, at: int, line_end: bytes) -> bytes:
    return encoded[:at] + line_end + encoded[at:]


text_parts = st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"h", b"hunter", b"\r\n", b"\n", b"\r", b"s3cr3t", b"next line"]),
    st.builds(wrapped, st.sampled_from([b"", b"x", b"xx"]).map(
        lambda p: base64.b64encode(p + SECRET.encode())), st.integers(0, 30),
        st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\r"])),
    st.sampled_from([SECRET, MULTILINE, MULTILINE.replace("\n", "\r\n")]).map(str.encode),
    st.sampled_from([b"", b"x", b"xx"]).map(lambda p: base64.b64encode(p + SECRET.encode())),
    st.sampled_from([b"", b"x", b"xx"]).map(
        lambda p: base64.urlsafe_b64encode(p + MULTILINE.encode())),
)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(text_parts, max_size=12), cuts=st.lists(st.integers(0, 600), max_size=10))
def test_any_chunking_masks_like_the_whole_text(parts: list[bytes], cuts: list[int]) -> None:
    secrets = [SECRET, MULTILINE]
    text = b"".join(parts)
    out = mask_in_chunks(secrets, text, [c for c in cuts if c <= len(text)])
    assert out == mask_whole(secrets, text)
    for secret in secrets:
        assert secret.encode() not in out and secret.replace("\n", "\r\n").encode() not in out


def chunks(data: bytes, rng: random.Random, largest: int) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        size = rng.randint(1, largest)
        out.append(data[at:at + size])
        at += size
    return out


def check_capped(kept: bytes, stream: bytes, max_bytes: int) -> None:
    """Head, then a marker counting the cut, then an end of the stream."""
    marker = MARKER.search(kept)
    assert marker is not None
    head, tail = kept[: marker.start()], kept[marker.end():]
    assert head == stream[: max_bytes // 2] and stream.endswith(tail)
    assert int(marker[1]) == len(stream) - len(head) - len(tail)
    assert len(kept) <= max_bytes + len(marker[0])


def check_times(logs: Logs, job_id: int, stream: bytes) -> list[Mark]:
    """The sidecar tells the truth about the logical `stream` (everything written, cut or
    not): its marks are in order, each counts the line ends before it, none marks a byte
    that was cut or not written, and one marks where the kept tail begins."""
    layout = logs.layout(job_id)
    with logs.timeline(job_id) as timeline:
        marks = timeline[:]
    assert marks and marks[0].offset == 0
    assert [m.offset for m in marks] == sorted({m.offset for m in marks})
    assert [m.ms for m in marks] == sorted(m.ms for m in marks)
    for mark in marks:
        assert mark.offset < len(stream) and mark.lines == stream[:mark.offset].count(b"\n")
        assert not layout.head <= mark.offset < layout.head + layout.cut
    if layout.cut:
        assert layout.head + layout.cut in {m.offset for m in marks}
    return marks


@pytest.mark.parametrize("largest", [1, 97, 3000, 50_000])
def test_the_cap_keeps_head_and_tail_and_counts_the_cut(tmp_path: Path, largest: int) -> None:
    max_bytes, rng = 4000, random.Random(largest)
    logs = Logs(tmp_path, max_bytes)
    log = logs.open(1)
    stream = b"".join(b"line %05d\n" % i for i in range(4000))  # 10 x max_bytes
    for part in chunks(stream, rng, largest):
        log.write(part)
        assert logs.size(1) <= max_bytes + 60
    log.finish()
    kept = logs.read(1, 0)
    check_capped(kept, stream, max_bytes)
    assert kept.endswith(stream[-max_bytes // 4:])
    check_times(logs, 1, stream)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.log", "1.times"]


def test_reopening_after_a_crash_neither_loses_nor_doubles(tmp_path: Path) -> None:
    stream = b"".join(b"%d: %s\n" % (i, SECRET.encode() if i % 7 == 0 else b"ok")
                      for i in range(300))
    logs = Logs(tmp_path, max_bytes=10**6)
    log = logs.open(5, [SECRET])
    log.write(stream[:1000])
    log.write(stream[1000:1003])  # ends inside a line: bytes may be held back
    with open(logs.path(5), "ab") as f:  # a write the crash cut short, after the last save
        f.write(b"GARBAGE")
    log.close()  # the server dies: what the masker held back is never written
    again = logs.open(5, [SECRET])
    assert 0 < again.raw_offset <= 1003
    assert logs.read(5, 0) == mask_whole([SECRET], stream[: again.raw_offset])
    again.write(stream[again.raw_offset:])
    again.finish()
    assert logs.read(5, 0) == mask_whole([SECRET], stream)
    check_times(logs, 5, mask_whole([SECRET], stream))


class Crash(Exception):
    """Stands for SIGKILL before one file operation."""


def crash_at(monkeypatch: pytest.MonkeyPatch, when: int) -> list[int]:
    """Make the `when`-th file change from now raise Crash; count them all."""
    calls = [0]
    for name in ("write", "pwrite", "ftruncate", "unlink", "replace"):
        real = getattr(os, name)

        def change(*args: Any, _real: Any = real) -> Any:
            calls[0] += 1
            if calls[0] == when:
                raise Crash
            return _real(*args)

        monkeypatch.setattr(os, name, change)
    return calls


def test_a_crash_at_any_step_of_a_cut_leaves_a_consistent_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    max_bytes = 1000
    stream = b"".join(b"row %04d\n" % i for i in range(600))
    parts = chunks(stream, random.Random(3), 90)

    def run(directory: Path, crash: int | None) -> bool:
        """Write all parts; crash during the part that makes the 2nd cut. Did it crash?"""
        logs = Logs(directory, max_bytes, clock=iter(range(0, 10**9, 30)).__next__)
        log, cuts, crashed = logs.open(1), 0, False
        for part in parts:
            grows = logs.size(1) + len(part) > max_bytes
            if grows and (cuts := cuts + 1) == 2 and crash is not None:
                with monkeypatch.context() as m:
                    counted = crash_at(m, crash)
                    try:
                        log.write(part)
                    except Crash:
                        crashed = True
                if crashed:  # the next server process picks the log up
                    log.close()
                    log = Logs(directory, max_bytes).open(1)
                    done = stream[: log.raw_offset]
                    kept = logs.read(1, 0)
                    check_capped(kept, done, max_bytes)
                    check_times(logs, 1, done)
                    assert log.raw_offset in (len(b"".join(parts[:parts.index(part)])),
                                              len(b"".join(parts[:parts.index(part) + 1])))
                    log.write(stream[log.raw_offset:])
                    break
                assert counted[0] >= 5  # journal, state, truncate, write, unlink, state
            else:
                log.write(part)
        log.finish()
        check_capped(logs.read(1, 0), stream, max_bytes)
        check_times(logs, 1, stream)
        return crashed

    when = 1
    while run(tmp_path / str(when), when):
        when += 1
    assert when > 5


WRITER = """
import random, sys
from pathlib import Path
import asyncci
from asyncci.logs import Logs
stream = Path(sys.argv[2]).read_bytes()
log, rng, at = Logs(Path(sys.argv[1]), 20_000).open(1, [sys.argv[3]]), random.Random(1), 0
while at < len(stream):
    size = rng.randint(1, 3000)
    log.write(stream[at:at + size])
    at += size
sys.stdin.read()  # never finishes: it is killed
"""


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_while_writing_leaves_a_log_that_resumes_exactly(tmp_path: Path, seed: int) -> None:
    stream = b"".join(b"%d %s\n" % (i, SECRET.encode() if i % 5 else b"x" * 40)
                      for i in range(60_000))
    (tmp_path / "stream").write_bytes(stream)
    target = random.Random(seed).randrange(len(stream))
    offset_file = tmp_path / "logs" / "1.offset"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path / "logs"), str(tmp_path / "stream"), SECRET],
        stdin=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(asyncci.__file__).parents[1])})

    def past_target() -> bool:
        assert writer.poll() is None, "the writer died"
        # The file exists a moment before its first numbers are in it.
        fields = offset_file.read_bytes().split() if offset_file.exists() else []
        return bool(fields) and int(fields[0]) >= target

    try:
        until_sync(past_target, what="the writer to pass the target offset")
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdin.close()  # type: ignore[union-attr]
    logs = Logs(tmp_path / "logs", 20_000)
    log = logs.open(1, [SECRET])
    check_capped(logs.read(1, 0), mask_whole([SECRET], stream[: log.raw_offset]), 20_000)
    check_times(logs, 1, mask_whole([SECRET], stream[: log.raw_offset]))
    log.write(stream[log.raw_offset:])
    log.finish()
    check_capped(logs.read(1, 0), mask_whole([SECRET], stream), 20_000)
    check_times(logs, 1, mask_whole([SECRET], stream))


def test_notes_reads_and_offsets(tmp_path: Path) -> None:
    logs = Logs(tmp_path, max_bytes=10**6)
    log = logs.open(2)
    log.note("[asyncci] attempt 1 on local slot 0")
    log.write(b"hello")
    log.note("[asyncci] attempt 2 on host b1")
    log.write(b"again\n")
    log.note("[asyncci] done")
    assert log.raw_offset == 11
    expected = (b"[asyncci] attempt 1 on local slot 0\nhello\n"
                b"[asyncci] attempt 2 on host b1\nagain\n[asyncci] done\n")
    assert logs.read(2, 0) == expected and logs.size(2) == len(expected)
    assert logs.read(2, 36, 5) == b"hello" and logs.read(2, len(expected)) == b""
    assert logs.read(99, 0) == b"" and logs.size(99) == 0
    log.close()
    again = logs.open(2)  # a reattach after a restart goes on after a note without a blank line
    assert again.raw_offset == 11
    again.note("[asyncci] reattached")
    assert logs.read(2, 0) == expected + b"[asyncci] reattached\n"
    again.finish()
    logs.delete(2)
    assert list(tmp_path.iterdir()) == []


async def test_wait_returns_on_write_on_close_and_on_timeout(tmp_path: Path) -> None:
    logs = Logs(tmp_path, max_bytes=10**6)
    log = logs.open(3)
    started = time.monotonic()
    await logs.wait(3, 0, 0.05)
    assert 0.04 <= time.monotonic() - started < 2
    waiters = [asyncio.create_task(logs.wait(3, 0, 10)) for _ in range(3)]
    late = asyncio.create_task(logs.wait(3, 1, 10))
    await asyncio.sleep(0)
    log.write(b"x")
    await asyncio.wait_for(asyncio.gather(*waiters), 2)
    assert not late.done()
    log.finish()
    await asyncio.wait_for(late, 2)
    assert logs.is_closed(3)
    await asyncio.wait_for(logs.wait(3, 100, 10), 2)  # closed: no waiting at all
    assert not logs._events and not logs._waiters  # nothing kept per job


def test_the_sidecar_marks_a_write_when_time_moved_on_or_many_bytes_came(tmp_path: Path) -> None:
    now = [1_000_000]
    logs = Logs(tmp_path, max_bytes=10**8, clock=lambda: now[0])
    log = logs.open(4)
    log.note("[asyncci] attempt 1")  # 20 bytes
    now[0] += TICK_MS - 1
    log.write(b"same tick\n")  # too soon for a mark of its own
    now[0] += 1
    log.write(b"")  # nothing arrived: nothing to mark
    log.write(b"next tick\nand a half")
    log.write(b"x" * STRIDE)  # many bytes, no time: marked all the same
    log.write(b" line\n")
    log.finish()
    with logs.timeline(4) as timeline:
        assert timeline[:] == [Mark(0, 0, 1_000_000), Mark(30, 2, 1_000_100),
                               Mark(30 + 20 + STRIDE, 3, 1_000_100)]
        assert timeline.at(29) == timeline[0] and timeline.at(30) == timeline[1]
        assert timeline.before_line(2) == timeline[0] and timeline.before_line(3) == timeline[1]
        assert timeline.between(1, 31) == [timeline[1]] and len(timeline) == 3
    assert logs.times_path(4).stat().st_size == 3 * MARK.size
    logs.delete(4)
    assert list(tmp_path.iterdir()) == []


def test_marks_past_the_saved_state_are_dropped_at_reopening(tmp_path: Path) -> None:
    clock = iter(range(0, 10**9, TICK_MS))
    logs = Logs(tmp_path, max_bytes=10**6, clock=clock.__next__)
    log = logs.open(6)
    for i in range(5):
        log.write(b"line %d\n" % i)
    with open(logs.times_path(6), "ab") as f:  # a mark whose bytes the crash lost...
        f.write(MARK.pack(35, 5, 10**6) + b"half")  # ...and half of one
    log.close()
    again = logs.open(6)
    again.write(b"line 5\n")
    again.finish()
    assert check_times(logs, 6, b"".join(b"line %d\n" % i for i in range(6)))[-1] == \
        Mark(35, 5, 5 * TICK_MS)
