"""Prometheus metrics of one relay (its own registry, exposed at /metrics)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from keys.ids import SEVERITIES

# The *_created series add nothing an operator needs and double the scrape size.
disable_created_metrics()  # type: ignore[no-untyped-call]

ACK_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400,
               259200)
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _Pending(Collector):
    def __init__(self, counts: Callable[[], dict[str, dict[str, int]]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._counts()
        for name, help_text in (("pending", "(notice, recipient) pairs awaiting acknowledgement"),
                                ("overdue", "of those, past their acknowledgement deadline")):
            family = GaugeMetricFamily(f"hotline_{name}", help_text, labels=["severity"])
            for severity in SEVERITIES:
                family.add_metric([severity], counts.get(name, {}).get(severity, 0))
            yield family


class _Disk(Collector):
    """Free and total bytes of the filesystem holding the relay's data, read at scrape."""

    def __init__(self, data_dir: Path, database: Path | None) -> None:
        self._dir = data_dir
        self._db = database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            st = os.statvfs(self._dir)
        except OSError:
            return
        yield GaugeMetricFamily("hotline_data_filesystem_avail_bytes",
                                "bytes available to the relay on its data filesystem",
                                value=st.f_bavail * st.f_frsize)
        yield GaugeMetricFamily("hotline_data_filesystem_size_bytes",
                                "size of the relay's data filesystem",
                                value=st.f_blocks * st.f_frsize)
        if self._db is not None:
            size = sum(p.stat().st_size for p in (self._db, self._db.with_name(
                self._db.name + "-wal")) if p.exists())
            yield GaugeMetricFamily("hotline_database_size_bytes",
                                    "SQLite database and write-ahead log, bytes", value=size)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.accepted = Counter("hotline_notices_accepted", "notices accepted",
                                ["severity", "status"], registry=r)
        self.delivered = Counter("hotline_notices_delivered", "delivery receipts recorded",
                                 ["severity", "status"], registry=r)
        self.acknowledged = Counter("hotline_notices_acknowledged", "acknowledgements recorded",
                                    ["severity", "status"], registry=r)
        self.escalations = Counter("hotline_escalations", "escalations, per level",
                                   ["severity", "level", "track", "status"], registry=r)
        self.resolved = Counter("hotline_escalations_resolved",
                                "escalation ladders ended by a late ack or reply",
                                ["severity", "track", "status"], registry=r)
        self.webhook_calls = Counter("hotline_webhook_deliveries", "webhook calls that succeeded",
                                     ["webhook"], registry=r)
        self.webhook_failures = Counter("hotline_webhook_failures",
                                        "webhook calls that failed (each attempt)",
                                        ["webhook"], registry=r)
        self.rejected = Counter("hotline_requests_rejected", "requests refused, by error code",
                                ["code"], registry=r)
        self.time_to_ack = Histogram("hotline_time_to_acknowledge_seconds",
                                     "from acceptance to acknowledgement",
                                     ["severity", "status"], buckets=ACK_BUCKETS, registry=r)
        self.lateness = Histogram("hotline_escalation_lateness_seconds",
                                  "how long after its scheduled time an escalation fired",
                                  buckets=LATENESS_BUCKETS, registry=r)
        # The relay's view of the drill scorecards: exercise and test notices only, per
        # recipient desk (bounded by the federation's desks). step: deliver (receipt),
        # acknowledge (a person's ack), auto_acknowledge (a link test's automatic ack).
        self.drill_time = Histogram("hotline_drill_time_seconds",
                                    "drill notices: from acceptance to the recipient's "
                                    "receipt or acknowledgement",
                                    ["recipient", "status", "step"], buckets=ACK_BUCKETS,
                                    registry=r)
        self.drill_late = Counter("hotline_drill_late_acknowledgements",
                                  "drill notices acknowledged after their ack deadline",
                                  ["recipient", "status"], registry=r)
        self.streams = Gauge("hotline_open_streams", "open desk WebSocket streams", registry=r)
        self.scheduler_heartbeat = Gauge("hotline_scheduler_last_pass_timestamp_seconds",
                                         "when the escalator last completed a pass", registry=r)
        self.scheduler_late = Gauge("hotline_scheduler_late_deadlines",
                                    "deadlines due more than the audit margin ago and not "
                                    "escalated: the scheduler is behind", registry=r)

        self.ready = Gauge("hotline_ready",
                           "1 when the relay can accept notices (as /readyz), else 0",
                           registry=r)
        self.ready_checked = Gauge("hotline_ready_last_check_timestamp_seconds",
                                   "when readiness was last checked", registry=r)
        self.root_expiry = Gauge("hotline_federation_root_expiry_timestamp_seconds",
                                 "when the pinned federation root expires", registry=r)
        self.tls_expiry = Gauge("hotline_tls_certificate_expiry_timestamp_seconds",
                                "when the certificate the relay serves itself expires "
                                "(absent behind a proxy)", registry=r)
        # The verifiable log (relay.tlog).
        self.log_size = Gauge("hotline_log_leaves", "leaves in the relay's log", registry=r)
        self.checkpoint_size = Gauge("hotline_log_checkpoint_size",
                                     "tree size of the latest signed checkpoint", registry=r)
        self.checkpoint_timestamp = Gauge("hotline_log_checkpoint_timestamp_seconds",
                                          "when the latest checkpoint was signed", registry=r)
        self.checkpoint_cosignatures = Gauge(
            "hotline_log_checkpoint_cosignatures",
            "witness cosignatures the latest checkpoint carries", registry=r)
        self.witnesses_configured = Gauge("hotline_log_witnesses",
                                          "witnesses the relay sends checkpoints to",
                                          registry=r)
        self.witnessed_size = Gauge("hotline_log_witnessed_size",
                                    "tree size of the latest checkpoint every witness cosigned",
                                    registry=r)
        self.witnessed_timestamp = Gauge(
            "hotline_log_witnessed_timestamp_seconds",
            "when the latest checkpoint every witness cosigned was signed", registry=r)
        self.witness_failures = Counter("hotline_log_witness_failures",
                                        "add-checkpoint calls that got no cosignature, by "
                                        "witness and reason (inconsistent = the witness "
                                        "refused our history)", ["witness", "reason"],
                                        registry=r)
        self.log_broken = Gauge("hotline_log_broken",
                                "1 when the stored leaves do not form a log (a gap)",
                                registry=r)

    def watch_disk(self, data_dir: Path, database: Path | None) -> None:
        self.registry.register(_Disk(data_dir, database))

    def watch_pending(self, counts: Callable[[], dict[str, dict[str, int]]]) -> None:
        self.registry.register(_Pending(counts))
