"""Relay-side errors and the HTTP status each error code answers with."""

from __future__ import annotations

from keys.errors import HotlineError


class RelayError(HotlineError):
    """An error the relay answers with ``status`` and the stable ``code``."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.retry_after = retry_after


class StorageUnavailable(HotlineError):
    """The database refused a write (disk full, read-only, gone): answer 503, store nothing."""

    code = "storage_unavailable"


#: HTTP status for each error code raised by keys/ and relay/; anything else is 400.
STATUS_BY_CODE = {
    "unknown_or_revoked_key": 403,
    "sender_mismatch": 403,
    "forbidden": 403,
    "not_found": 404,
    "id_conflict": 409,
    "digest_mismatch": 409,
    "already_confirmed": 409,
    "too_large": 413,
    "body_too_large": 413,
    "body_timeout": 408,
    "encoding_not_allowed": 415,
    "unsupported_media_type": 415,
    "unauthorized": 401,
    "bad_challenge": 401,
    "rate_limited": 429,
    "storage_unavailable": 503,
}


def status_for(code: str) -> int:
    return STATUS_BY_CODE.get(code, 400)
