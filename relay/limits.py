"""Token buckets for rate limits: per desk (notices, bytes) and per address (challenges)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """``rate`` tokens per second up to ``burst``. ``take`` returns 0 or the seconds to wait."""

    rate: float
    burst: float
    tokens: float
    updated_ms: int

    @classmethod
    def per_minute(cls, count: float, now_ms: int) -> TokenBucket:
        return cls(count / 60.0, count, count, now_ms)

    def take(self, now_ms: int, amount: float = 1.0) -> float:
        elapsed = max(0, now_ms - self.updated_ms) / 1000.0
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated_ms = now_ms
        if amount > self.burst:
            return float("inf")
        if self.tokens >= amount:
            self.tokens -= amount
            return 0.0
        return (amount - self.tokens) / self.rate if self.rate > 0 else float("inf")


class Buckets:
    """A bounded map of buckets by key (desk id or address); old ones are forgotten."""

    def __init__(self, per_minute: float, max_keys: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now_ms: int, amount: float = 1.0) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                # Forget the oldest half; a forgotten key starts again with a full bucket,
                # which only ever errs towards serving.
                for k in list(self._buckets)[: self.max_keys // 2]:
                    del self._buckets[k]
            bucket = self._buckets[key] = TokenBucket.per_minute(self.per_minute, now_ms)
        return bucket.take(now_ms, amount)
