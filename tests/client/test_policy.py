"""Retry policy and the small parsers of the connection: pure functions, tested as such."""

from __future__ import annotations

import pytest

from client.connection import (
    RetryPolicy,
    normalize_relay_url,
    origin_of,
    parse_retry_after,
)
from keys.errors import UsageError


def test_backoff_doubles_up_to_the_cap() -> None:
    """Without jitter the delay is half the ceiling, and the ceiling doubles until capped."""
    p = RetryPolicy(base_delay=1.0, max_delay=8.0)
    assert [p.delay(n, 0.0) for n in range(0, 7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert [p.delay(n, 0.999999) for n in range(1, 6)] == pytest.approx([1, 2, 4, 8, 8],
                                                                        rel=1e-5)


@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.9999])
def test_jitter_stays_between_half_and_full_ceiling(jitter: float) -> None:
    p = RetryPolicy(base_delay=0.25, max_delay=30.0)
    for failures in range(1, 40):
        ceiling = min(30.0, 0.25 * 2 ** (failures - 1))
        assert ceiling / 2 <= p.delay(failures, jitter) <= ceiling


def test_huge_failure_counts_do_not_overflow() -> None:
    assert RetryPolicy(max_delay=30.0).delay(10_000, 0.5) <= 30.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("2", 2.0), (" 7 ", 7.0), ("0.5", 0.5), ("0", 0.0), (None, None), ("", None),
     ("soon", None), ("-3", None), ("nan", None),
     ("Wed, 21 Oct 2026 07:28:00 GMT", None)],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


@pytest.mark.parametrize(
    ("url", "normal"),
    [("http://127.0.0.1:8750", "http://127.0.0.1:8750"),
     ("https://Relay.Example.org/", "https://relay.example.org"),
     ("https://relay.example.org/hotline/", "https://relay.example.org/hotline")],
)
def test_relay_urls_are_normalized(url: str, normal: str) -> None:
    assert normalize_relay_url(url) == normal


@pytest.mark.parametrize("url", ["ftp://relay", "relay.example.org", "http://", "",
                                 "https://relay/?x=1"])
def test_bad_relay_urls_are_refused(url: str) -> None:
    with pytest.raises(UsageError, match="relay URL"):
        normalize_relay_url(url)


def test_origins_ignore_path_case_and_default_port() -> None:
    assert origin_of("https://Relay.example.org:443/x") == origin_of("https://relay.example.org")
    assert origin_of("http://a:8750") != origin_of("http://a:8751")
    assert origin_of("http://a") != origin_of("https://a")
