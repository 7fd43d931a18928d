"""The settings and pure pieces of the limits across campaigns: `frequency_cap`, the gateway's volume limits,
the retention key and age, and the deferral events' payloads (`tasks/limits.py`)."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from globe_sms.campaign import Campaign, CampaignFileError
from globe_sms.retention import KEY_BLOCK_ENV, KEY_ENV, RetentionKeyMissing, parse_age, retention_key
from tasks.limits import deferral_events
from tasks.report import CampaignSummary


def campaign(**overrides: object) -> Campaign:
    return Campaign.parse({"campaign_id": "c", "source": {"path": "x.csv"}, "template": "Hi", **overrides})


class TestFrequencyCap:
    def test_window_and_types(self) -> None:
        cap = campaign(frequency_cap={"max_messages": 2, "per": "7d", "message_types": ["MKT", "MKT"]})
        assert cap.frequency_cap is not None
        assert cap.frequency_cap.window == timedelta(days=7) and cap.frequency_cap.message_types == ["MKT"]
        assert campaign(frequency_cap={"max_messages": 1, "per": "24h"}).frequency_cap.window == timedelta(
            hours=24
        )  # type: ignore[union-attr]
        assert campaign().frequency_cap is None

    @pytest.mark.parametrize(
        "cap",
        [
            {"max_messages": 1, "per": "24m"},
            {"max_messages": 0, "per": "24h"},
            {"max_messages": 1, "per": "0h"},
            {"max_messages": True, "per": "24h"},
            {"max_messages": 1, "per": "24h", "message_types": ["SMS"]},
            {"max_messages": 1},
        ],
    )
    def test_bad_caps_are_refused_naming_the_field(self, cap: dict[str, object]) -> None:
        with pytest.raises(CampaignFileError, match="frequency_cap"):
            campaign(frequency_cap=cap)


class TestVolumeLimits:
    def test_defaults_and_values(self) -> None:
        assert (campaign().gateway.daily_limit, campaign().gateway.limit_time_zone) == (None, "UTC")
        gateway = campaign(
            gateway={"daily_limit": 200, "monthly_limit": 5000, "limit_time_zone": "Asia/Singapore"}
        )
        assert (gateway.gateway.daily_limit, gateway.gateway.monthly_limit) == (200, 5000)

    @pytest.mark.parametrize(
        "settings", [{"daily_limit": 0}, {"monthly_limit": -1}, {"limit_time_zone": "Mars/Olympus"}]
    )
    def test_bad_limits_are_refused(self, settings: dict[str, object]) -> None:
        with pytest.raises(CampaignFileError, match="gateway"):
            campaign(gateway=settings)


class TestRetentionKey:
    def test_an_hmac_of_the_number_and_never_shown(self) -> None:
        secret = "sixteen-chars-or-more"
        key = retention_key({KEY_ENV: secret})
        assert key is not None
        expected = hmac.new(secret.encode(), b"6591234567", hashlib.sha256).hexdigest()
        assert key.phone_keys(["6591234567"]) == [expected]
        assert secret not in repr(key) and secret not in str(key)

    def test_missing_or_short_keys_are_refused_without_the_value(self) -> None:
        with pytest.raises(RetentionKeyMissing, match=KEY_ENV):
            retention_key({})
        assert retention_key({}, required=False) is None
        with pytest.raises(RetentionKeyMissing, match="at least 16") as raised:
            retention_key({KEY_ENV: "short-secret"})
        assert "short-secret" not in str(raised.value)
        assert KEY_BLOCK_ENV in str(pytest.raises(RetentionKeyMissing, retention_key, {}).value)

    @pytest.mark.parametrize(("text", "age"), [("90d", timedelta(days=90)), ("36h", timedelta(hours=36))])
    def test_ages(self, text: str, age: timedelta) -> None:
        assert parse_age(text) == age

    @pytest.mark.parametrize("text", ["90", "3w", "-1d", "1.5d", ""])
    def test_bad_ages(self, text: str) -> None:
        with pytest.raises(ValueError, match="days or hours"):
            parse_age(text)


def test_one_deferral_event_per_limit_that_held_rows_back() -> None:
    until = datetime(2026, 12, 7, tzinfo=UTC)
    summary = CampaignSummary(campaign_id="c", dry_run=False)
    assert deferral_events(summary) == []
    summary.volume_deferred, summary.volume_held_back_by, summary.volume_until = 100, "daily_limit", until
    summary.deferred, summary.next_window_opening = 7, None
    assert deferral_events(summary) == [
        {"limit": "send_window", "count": 7, "until": None},
        {"limit": "daily_limit", "count": 100, "until": until},
    ]
    assert summary.volume_deferral_text == "deferred 100 until 2026-12-07 00:00 UTC (daily_limit)"
