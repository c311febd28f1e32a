"""Who may do what. Reads are public when `web.public`; everything else needs the bearer
token (API) or a login session (pages), and a form also needs its CSRF token.

A session is a random id in the cookie; the store keeps only its hash, keyed with a key
derived from the web token, so a copied database opens nothing, changing the token logs
everyone out, a restart logs nobody out, and a logout ends the session on the server (a
copy of the cookie is worthless after). The CSRF token is derived from the session, so a
page from another site cannot know it. Wrong tokens are throttled per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from datetime import timedelta

from aiohttp import web

from ..model import utcnow
from .keys import CONFIG, SESSIONS, STORE, THROTTLE

COOKIE = "asyncci_session"
SESSION_S = 7 * 86400


def _key(request: web.Request, purpose: str) -> bytes | None:
    token = request.app[CONFIG].web.token
    if token is None:
        return None
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).digest()


def _bytes(text: str) -> bytes:
    """Text from a request as bytes: aiohttp keeps undecodable header bytes as surrogates,
    which a plain encode() refuses, and compare_digest() takes no non-ASCII str."""
    return text.encode(errors="surrogateescape")


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, _bytes(text), hashlib.sha256).hexdigest()


def token_matches(request: web.Request, given: str) -> bool:
    token = request.app[CONFIG].web.token
    return token is not None and hmac.compare_digest(_bytes(given.strip()), token.encode())


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value if scheme.lower() == "bearer" else None


def has_token(request: web.Request) -> bool:
    given = _bearer(request)
    return given is not None and token_matches(request, given)


def throttled(request: web.Request) -> int:
    """Whole seconds this client must wait before any token of its is looked at; 0: none."""
    return math.ceil(request.app[THROTTLE].retry_after(request.remote or ""))


def attempted(request: web.Request, right: bool) -> bool:
    """Count one try of a token by this client; `right`."""
    return request.app[THROTTLE].attempted(request.remote or "", right)


def check_bearer(request: web.Request) -> None:
    """Once per request (the guard calls it): a bearer token counts as a try, and a client
    that guessed wrong too often gets 429 whatever it sends."""
    if _bearer(request) is None:
        return
    if wait := throttled(request):
        raise web.HTTPTooManyRequests(
            text=json.dumps({"error": f"too many wrong tokens: try again in {wait} s"}),
            content_type="application/json", headers={"Retry-After": str(wait)},
        )
    attempted(request, has_token(request))


def _session_hash(request: web.Request) -> str | None:
    key = _key(request, "session")
    session_id = request.cookies.get(COOKIE)
    return _sign(key, session_id) if key is not None and session_id else None


async def load_sessions(app: web.Application) -> None:
    """At startup: the store's live sessions into the cache the requests read."""
    app[SESSIONS].update(await app[STORE].live_sessions())


async def start_session(request: web.Request) -> str:
    """A new session; the id for the cookie. Stored before it is usable, so a restart
    keeps it; expired ones leave the cache here, so it holds only live sessions."""
    key = _key(request, "session")
    assert key is not None  # a login needs the token
    session_id = secrets.token_urlsafe(32)
    hashed, now = _sign(key, session_id), utcnow()
    await request.app[STORE].add_session(hashed, now + timedelta(seconds=SESSION_S))
    sessions = request.app[SESSIONS]
    for stale in [h for h, expires_at in sessions.items() if expires_at <= now]:
        del sessions[stale]
    sessions[hashed] = now + timedelta(seconds=SESSION_S)
    return session_id


async def end_session(request: web.Request) -> None:
    hashed = _session_hash(request)
    if hashed is not None and hashed in request.app[SESSIONS]:
        await request.app[STORE].drop_session(hashed)
        request.app[SESSIONS].pop(hashed, None)


def has_session(request: web.Request) -> bool:
    hashed = _session_hash(request)
    expires_at = request.app[SESSIONS].get(hashed) if hashed is not None else None
    return expires_at is not None and expires_at > utcnow()


def csrf_token(request: web.Request) -> str:
    """The token every form of this session carries ("" when there is no session)."""
    key = _key(request, "csrf")
    if key is None or not has_session(request):
        return ""
    return _sign(key, request.cookies[COOKIE])


def check_form(request: web.Request, form: dict[str, str]) -> None:
    """A form post needs a session and its CSRF token; 403 otherwise."""
    expected = csrf_token(request)
    if not expected or not hmac.compare_digest(_bytes(form.get("csrf", "")), expected.encode()):
        raise web.HTTPForbidden(text="log in first, and post this form from asyncci's own page")


def require_token(request: web.Request) -> None:
    if not has_token(request):
        if request.app[CONFIG].web.token is None:
            raise web.HTTPUnauthorized(
                text='{"error": "no token is configured: set the variable named by web.token_env"}',
                content_type="application/json",
            )
        raise web.HTTPUnauthorized(
            text='{"error": "a valid Authorization: Bearer token is required"}',
            content_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )


def may_read(request: web.Request) -> bool:
    return request.app[CONFIG].web.public or has_token(request) or has_session(request)
