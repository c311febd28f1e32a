"""Job logs: masking across chunk borders, the size cap, crash consistency, waiting."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from asyncci.logs import Logs, Masker, secret_forms

SECRET = "hunter2-very-secret"


def mask_in_chunks(secrets: list[str], text: bytes, cuts: list[int]) -> bytes:
    masker = Masker(secrets)
    out, last = [], 0
    for cut in sorted(set(cuts)) + [len(text)]:
        out.append(masker.feed(text[last:cut]))
        last = cut
    return b"".join(out) + masker.flush()


def test_a_secret_is_masked_wherever_a_chunk_border_falls() -> None:
    text = f"before {SECRET} after\n".encode()
    for cut in range(len(text) + 1):
        assert mask_in_chunks([SECRET], text, [cut]) == b"before *** after\n", cut


def test_multiline_secrets_and_crlf() -> None:
    secret = "line one\nline two"
    for printed in (secret, secret.replace("\n", "\r\n")):
        out = mask_in_chunks([secret], f"x {printed} y".encode(), [5, 9])
        assert out == b"x *** y"


def test_base64_forms_at_every_alignment() -> None:
    for prefix in (b"", b"x", b"xx"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            printed = encode(prefix + SECRET.encode())
            out = mask_in_chunks([SECRET], b"token: " + printed + b"\n", [11])
            assert SECRET.encode() not in out and b"***" in out
            assert printed not in out


def test_prefix_secrets_hold_back_little_and_no_secrets_pass_through() -> None:
    masker = Masker(["abcd", "abcdefgh"])
    assert masker.feed(b"xx abcdefgh abcd yy") + masker.flush() == b"xx *** *** yy"
    masker.feed(b"z" * 1000)
    longest = max(len(f) for s in ("abcd", "abcdefgh") for f in secret_forms(s))
    assert masker.held <= longest - 1
    plain = Masker([])
    assert plain.feed(b"\x00\xffabc") == b"\x00\xffabc" and plain.held == 0


@settings(max_examples=200, deadline=None)
@given(
    parts=st.lists(st.one_of(st.binary(max_size=20), st.sampled_from(
        [SECRET.encode(), b"s3cr3t\nmore", base64.b64encode(b"y" + SECRET.encode())])),
        max_size=12),
    cuts=st.lists(st.integers(0, 400), max_size=8),
)
def test_any_chunking_masks_like_the_whole_text(parts: list[bytes], cuts: list[int]) -> None:
    secrets = [SECRET, "s3cr3t\nmore"]
    text = b"".join(parts)
    whole = mask_in_chunks(secrets, text, [])
    assert mask_in_chunks(secrets, text, [c for c in cuts if c <= len(text)]) == whole
    assert SECRET.encode() not in whole and b"s3cr3t\nmore" not in whole


def test_the_cap_keeps_head_and_tail_and_counts_the_cut(tmp_path: Path) -> None:
    logs = Logs(tmp_path, max_bytes=4000)
    log = logs.open(1)
    stream = b"".join(b"line %05d\n" % i for i in range(4000))  # 40,000 bytes
    for start in range(0, len(stream), 777):
        log.write(stream[start:start + 777])
    log.finish()
    kept = logs.read(1, 0, 1 << 20)
    marker = re.search(rb"\n\[asyncci: (\d+) bytes cut from the middle of this log\]\n", kept)
    assert marker is not None
    head, tail = kept[: marker.start()], kept[marker.end():]
    assert head == stream[:2000] and stream.endswith(tail) and len(tail) == 1000
    assert int(marker[1]) == len(stream) - len(head) - len(tail)
    assert len(kept) <= 4000 + len(marker[0])


def test_reopening_after_a_crash_neither_loses_nor_doubles(tmp_path: Path) -> None:
    stream = b"".join(b"%d: %s\n" % (i, SECRET.encode() if i % 7 == 0 else b"ok") for i in range(300))
    expected = mask_in_chunks([SECRET], stream, [])
    logs = Logs(tmp_path, max_bytes=10**6)
    log = logs.open(5, [SECRET])
    log.write(stream[:1000])
    log.write(stream[1000:1003])  # ends inside a line: bytes may be held back
    with open(logs.path(5), "ab") as f:  # a write the crash cut short, after the last save
        f.write(b"GARBAGE")
    log.close()  # the server dies: what the masker held back is never written
    again = logs.open(5, [SECRET])
    assert 0 < again.raw_offset <= 1003
    again.write(stream[again.raw_offset:])
    again.finish()
    assert logs.read(5, 0, 1 << 20) == expected


def test_notes_reads_and_offsets(tmp_path: Path) -> None:
    logs = Logs(tmp_path, max_bytes=10**6)
    log = logs.open(2)
    log.note("[asyncci] attempt 1 on local slot 0")
    log.write(b"hello")
    log.note("[asyncci] attempt 2")
    assert log.raw_offset == 5
    assert logs.read(2, 0) == b"[asyncci] attempt 1 on local slot 0\nhello\n[asyncci] attempt 2\n"
    assert logs.read(2, 36, 5) == b"hello" and logs.size(2) == 62
    assert logs.read(99, 0) == b"" and logs.size(99) == 0
    log.finish()


async def test_wait_returns_on_write_on_close_and_on_timeout(tmp_path: Path) -> None:
    logs = Logs(tmp_path, max_bytes=10**6)
    log = logs.open(3)
    started = time.monotonic()
    await logs.wait(3, 0, 0.1)
    assert 0.09 <= time.monotonic() - started < 2
    waiter = asyncio.create_task(logs.wait(3, 0, 10))
    await asyncio.sleep(0.01)
    log.write(b"x")
    await asyncio.wait_for(waiter, 2)
    waiter = asyncio.create_task(logs.wait(3, 1, 10))
    await asyncio.sleep(0.01)
    log.finish()
    await asyncio.wait_for(waiter, 2)
    assert logs.is_closed(3)


def test_only_a_possible_start_of_a_secret_is_held_back() -> None:
    masker = Masker([SECRET])
    assert masker.feed(b"progress 10%\n") == b"progress 10%\n"  # nothing waits for more
    assert masker.feed(b"token hunt") == b"token "  # "hunt" may begin the secret
    assert masker.feed(b"er2-very-secret!") == b"***!"
