"""Typed keys of the aiohttp application's shared objects."""

from __future__ import annotations

from aiohttp import web

from relay.auth import Authenticator
from relay.core import Relay
from relay.limits import Buckets

RELAY: web.AppKey[Relay] = web.AppKey("relay", Relay)
AUTH: web.AppKey[Authenticator] = web.AppKey("auth", Authenticator)
AUTH_RATE: web.AppKey[Buckets] = web.AppKey("auth_rate", Buckets)
