"""A synchronous facade over :class:`client.client.HotlineClient`, for scripts.

::

    with HotlineSync.from_home("/etc/hotline/us.caisi") as hs:
        hs.send(to=["cn.cac"], severity="high", notice=report)
        for n in hs.inbox():                  # fetched, verified, receipts sent
            handle(n.report)
            hs.ack(n.notice_id)               # acknowledged notices leave the inbox

It owns one event loop (``asyncio.Runner``) for its whole life, so the relay connection
and its session are reused between calls. Do not use it from inside async code: use
``HotlineClient`` there.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from client.client import AckResult, HotlineClient, Item, ReceivedNotice, SendResult
from client.items import OutboxItem
from client.verify import NoticeStatusView
from keys.errors import UsageError
from keys.report import IncidentReport

T = TypeVar("T")


class HotlineSync:
    """Blocking calls to a :class:`HotlineClient`; see that class for the semantics."""

    def __init__(self, client: HotlineClient) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise UsageError("HotlineSync cannot run inside an event loop; use HotlineClient")
        self.client = client
        self._runner = asyncio.Runner()
        self._closed = False
        try:
            self._call(client.start())
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_home(
        cls,
        path: str | os.PathLike[str] | None = None,
        passphrase: bytes | str | None = None,
        *,
        relays: Sequence[str] | None = None,
        passphrase_file: str | None = None,
        **kwargs: Any,
    ) -> HotlineSync:
        """Like :meth:`HotlineClient.from_home`."""
        return cls(HotlineClient.from_home(path, passphrase, relays=relays,
                                           passphrase_file=passphrase_file, **kwargs))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise UsageError("this HotlineSync is closed")
        return self._runner.run(coro)

    def __enter__(self) -> HotlineSync:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            try:
                self._runner.run(self.client.close())
            finally:
                self._closed = True
                self._runner.close()

    # ------------------------------------------------------------------ calls
    def send(
        self,
        to: Iterable[str],
        severity: str,
        notice: IncidentReport,
        status: str = "actual",
        in_reply_to: bytes | str | None = None,
        *,
        notice_id: bytes | str | None = None,
        queue: bool = True,
    ) -> SendResult:
        """See :meth:`HotlineClient.send`: ``result.queued`` means NOT at the relay yet."""
        return self._call(self.client.send(to, severity, notice, status, in_reply_to,
                                           notice_id=notice_id, queue=queue))

    def inbox(self, *, fetch: bool = True, include_acked: bool = False) -> list[ReceivedNotice]:
        """Fetch what the relay has for this desk (verifying each notice and sending its
        delivery receipt), then return the received notices not yet acknowledged (all of
        them with ``include_acked``), oldest first. A notice stays here until acked."""
        if fetch:
            self._call(self.client.fetch())
        return self.client.inbox(include_acked=include_acked)

    def fetch(self) -> list[Item]:
        """Handle the events available now; return them (notices, receipts, acks, ...)."""
        return self._call(self.client.fetch())

    def ack(self, notice_id: bytes | str, message: str | None = None, *,
            queue: bool = True) -> AckResult:
        """See :meth:`HotlineClient.ack`: ``result.queued`` means NOT at the relay yet."""
        return self._call(self.client.ack(notice_id, message, queue=queue))

    def outbox(self) -> list[OutboxItem]:
        """What waits in this desk's outbox for the relay (local)."""
        return self.client.outbox()

    def retry_outbox(self) -> int:
        return self._call(self.client.retry_outbox())

    def status(self, notice_id: bytes | str) -> NoticeStatusView:
        return self._call(self.client.status(notice_id))

    def resend_unconfirmed(self) -> list[SendResult]:
        return self._call(self.client.resend_unconfirmed())

    def mark_processed(self, notice_id: bytes | str) -> None:
        self.client.mark_processed(notice_id)


__all__ = ["HotlineSync"]
