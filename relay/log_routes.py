"""The log's public, static-cacheable resources (C2SP tlog-tiles; PROTOCOL.md 20.3).

``GET /checkpoint`` the latest checkpoint with its cosignatures; ``GET /tile/<L>/<N>[.p/<W>]``
hash tiles and ``GET /tile/entries/<N>[.p/<W>]`` entry bundles of the tree it commits to;
``GET /v1/log/index/<hex SHA-256 of a statement>`` the leaf index recording a statement
(decimal text, once a checkpoint covers it; to know the hash one must hold the signed
statement). Full tiles never
change (immutable); the checkpoint and partial tiles do (max-age 1).
"""

from __future__ import annotations

import re

from aiohttp import web

from keys.errors import ProtocolError
from keys.tlog import leaf_hash
from relay.app_keys import RELAY
from relay.tlog import MUTABLE_MAX_AGE_S

_IMMUTABLE = "public, max-age=31536000, immutable"
_MUTABLE = f"public, max-age={MUTABLE_MAX_AGE_S}"
_HEX = re.compile(r"[0-9a-f]{64}")


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=(message + "\n").encode(), content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


async def checkpoint(request: web.Request) -> web.Response:
    data = request.app[RELAY].tlog.checkpoint(request.protocol)
    if data is None:
        return _text(404, "the log has no checkpoint yet")
    return web.Response(body=data, content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": _MUTABLE})


async def tile(request: web.Request) -> web.Response:
    path = "tile/" + request.match_info["tail"]
    try:
        found = request.app[RELAY].tlog.tile(path, request.protocol)
    except ProtocolError as exc:
        return _text(400, str(exc))
    if found is None:
        return _text(404, f"{path[:120]} is not in the published tree")
    data, full = found
    return web.Response(body=data, content_type="application/octet-stream",
                        headers={"Cache-Control": _IMMUTABLE if full else _MUTABLE})


async def leaf_index(request: web.Request) -> web.Response:
    h = request.match_info["hash"]
    if not _HEX.fullmatch(h):
        return _text(400, "expected the lowercase hex SHA-256 of a statement")
    index = request.app[RELAY].tlog.store.index_by_leaf_hash(leaf_hash(bytes.fromhex(h)))
    if index is None:
        return _text(404, "no leaf records a statement with this hash")
    return web.Response(body=f"{index}\n".encode(), content_type="text/plain",
                        headers={"Cache-Control": _IMMUTABLE})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/checkpoint", checkpoint)
    app.router.add_get("/tile/{tail:.+}", tile)
    app.router.add_get("/v1/log/index/{hash}", leaf_index)
