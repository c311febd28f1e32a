"""Who may do what. Reads are public when `web.public`; everything else needs the bearer
token (API) or a login session (pages), and a form also needs its CSRF token.

Sessions are stateless: the cookie is an expiry signed with a key derived from the web
token, so changing the token logs everyone out and a restart logs nobody out. The CSRF
token is derived from the session, so a page from another site cannot know it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from aiohttp import web

from .keys import CONFIG

COOKIE = "asyncci_session"
SESSION_S = 7 * 86400


def _key(request: web.Request, purpose: str) -> bytes | None:
    token = request.app[CONFIG].web.token
    if token is None:
        return None
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).digest()


def _sign(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def token_matches(request: web.Request, given: str) -> bool:
    token = request.app[CONFIG].web.token
    return token is not None and hmac.compare_digest(given.strip().encode(), token.encode())


def has_token(request: web.Request) -> bool:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and token_matches(request, value)


def new_session(request: web.Request) -> str:
    key = _key(request, "session")
    assert key is not None
    expires = str(int(time.time()) + SESSION_S)
    return f"{expires}.{_sign(key, expires)}"


def has_session(request: web.Request) -> bool:
    key = _key(request, "session")
    expires, _, signature = request.cookies.get(COOKIE, "").partition(".")
    return (
        key is not None and expires.isdigit() and int(expires) > time.time()
        and hmac.compare_digest(signature, _sign(key, expires))
    )


def csrf_token(request: web.Request) -> str:
    """The token every form of this session carries ("" when there is no session)."""
    key = _key(request, "csrf")
    if key is None or not has_session(request):
        return ""
    return _sign(key, request.cookies[COOKIE])


def check_form(request: web.Request, form: dict[str, str]) -> None:
    """A form post needs a session and its CSRF token; 403 otherwise."""
    expected = csrf_token(request)
    if not expected or not hmac.compare_digest(form.get("csrf", ""), expected):
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
