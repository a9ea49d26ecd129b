"""Hotline's client library (and, under ``client.cli``, the ``hotline`` command).

``HotlineClient`` is the async API; ``HotlineSync`` wraps it for scripts. Everything a
notice carries is verified before it is handed over: the sender's certificate against
the pinned federation root, every signature, the relay's attestations.
"""

from client.client import (
    AckResult,
    ClockSkewWarning,
    ConfirmationEvent,
    EscalationEvent,
    HotlineClient,
    Item,
    NoticeRejected,
    ReceivedNotice,
    SendResult,
    StatusMismatch,
    UnknownDesk,
    UnknownNotice,
    WatchdogOverdue,
)
from client.connection import (
    RelayConnection,
    RelayError,
    RelayIdentityError,
    RelayUnavailable,
    RetryPolicy,
)
from client.items import NoticeUnopened, OutboxItem, UnopenedNotice
from client.state import ClientState
from client.sync import HotlineSync
from client.verify import NoticeStatusView, RecipientView, Step

__all__ = [
    "AckResult",
    "ClientState",
    "ClockSkewWarning",
    "ConfirmationEvent",
    "EscalationEvent",
    "HotlineClient",
    "HotlineSync",
    "Item",
    "NoticeRejected",
    "NoticeStatusView",
    "NoticeUnopened",
    "OutboxItem",
    "ReceivedNotice",
    "RecipientView",
    "RelayConnection",
    "RelayError",
    "RelayIdentityError",
    "RelayUnavailable",
    "RetryPolicy",
    "SendResult",
    "StatusMismatch",
    "Step",
    "UnknownDesk",
    "UnknownNotice",
    "UnopenedNotice",
    "WatchdogOverdue",
]
