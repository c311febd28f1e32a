"""Who may do what: reads are public when `web.public`, writes need the bearer token."""

from __future__ import annotations

import hmac

from aiohttp import web

from .keys import CONFIG


def has_token(request: web.Request) -> bool:
    token = request.app[CONFIG].web.token
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    return (
        token is not None
        and scheme.lower() == "bearer"
        and hmac.compare_digest(value.strip().encode(), token.encode())
    )


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
    return request.app[CONFIG].web.public or has_token(request)
