"""Timestamps in the contract's JSON: ISO 8601 UTC, milliseconds, ``Z``; naive values are
UTC (as the store keeps them), aware ones are converted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from colaflow_mcp.domain.representation import iso


def expected(dt: datetime) -> str:
    utc = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def test_known_values() -> None:
    assert iso(None) is None
    assert iso(datetime(2026, 11, 30, 13, 5, 7, 123999)) == "2026-11-30T13:05:07.123Z"
    paris = timezone(timedelta(hours=1))
    assert iso(datetime(2026, 11, 30, 14, 5, 7, 1000, tzinfo=paris)) == \
        "2026-11-30T13:05:07.001Z"
    assert iso(datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))) == \
        "2025-12-31T22:30:00.000Z"


@given(st.datetimes(min_value=datetime(1971, 1, 2), max_value=datetime(2999, 12, 30)),
       st.one_of(st.none(), st.just(UTC),
                 st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))))
def test_any_datetime_naive_or_aware(dt: datetime, tz: timezone | None) -> None:
    value = dt if tz is None else dt.replace(tzinfo=tz)
    assert iso(value) == expected(value)
