"""Quiet hours without Prefect or a gateway: zones from numbers, the window's openings, and deferral."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import polars as pl
import pytest
from phonenumbers import tzdata

from globe_sms.campaign import Campaign, CampaignFileError
from globe_sms.clock import fixed_clock
from globe_sms.send_window import SendWindow
from tasks.deferral import DEPARTURE_MARGIN, WindowCheck
from tasks.time_zones import TIME_ZONES, with_time_zones, zone_names

DAY = SendWindow(start=time(9), end=time(20))
NIGHT = SendWindow(start=time(21), end=time(8))
JUNE_15 = datetime(2026, 6, 15, tzinfo=UTC)


def zones_of(*phones: str, **columns: list[str | None]) -> list[list[str] | None]:
    frame = with_time_zones(pl.DataFrame({"phone": list(phones), **columns}), "phone", *columns)
    return [zone_names(value) if value else None for value in frame[TIME_ZONES]]


class TestZonesFromNumbers:
    @pytest.mark.parametrize(
        ("phone", "zone"),
        [("85291234567", "Asia/Hong_Kong"), ("6591234567", "Asia/Singapore"),
         ("12125550123", "America/New_York"), ("13105550123", "America/Los_Angeles")],
    )
    def test_single_zone_numbers(self, phone: str, zone: str) -> None:
        assert zones_of(phone) == [[zone]]

    def test_a_british_number_gets_the_zones_of_the_uk(self) -> None:
        [zones] = zones_of("447911123456")
        assert zones is not None and "Europe/London" in zones
        assert all(zone.startswith("Europe/") for zone in zones)

    def test_a_number_that_only_tells_its_country_gets_every_zone_of_it(self) -> None:
        [zones] = zones_of("18005550123")  # toll-free: no area code in the metadata, so all of +1
        assert zones is not None
        assert {"America/New_York", "America/Los_Angeles", "Pacific/Honolulu"} <= set(zones)

    def test_an_unknown_prefix_has_no_zone(self) -> None:
        assert zones_of("999123") == [None]

    def test_a_mobile_of_a_multi_zone_country_gets_every_zone_of_its_code(self) -> None:
        """Mobiles are not geographical in Australia: `+61 4...` may be Perth as well as Sydney."""
        [mobile, perth_landline] = zones_of("61412345678", "61892345678")
        assert mobile is not None
        assert {"Australia/Perth", "Australia/Sydney", "Australia/Lord_Howe"} <= set(mobile)
        assert perth_landline is not None and "Australia/Sydney" not in perth_landline

    def test_shared_codes_give_every_region_of_the_code(self) -> None:
        """A Jersey or Manx mobile (+44 7...) gets the zones of all of +44; Réunion's those of Mayotte too."""
        [uk_mobile, jersey_mobile, reunion_mobile] = zones_of("447911123456", "447797123456", "262692123456")
        british_isles = ["Europe/Guernsey", "Europe/Isle_of_Man", "Europe/Jersey", "Europe/London"]
        assert uk_mobile == jersey_mobile == british_isles
        assert reunion_mobile == ["Indian/Mayotte", "Indian/Reunion"]

    def test_a_number_shorter_than_a_prefix_it_pads_into_is_looked_up_by_its_own_digits(self) -> None:
        """A prefix ending in 0, less that 0, gets (at least) the zones of its own longest prefix."""
        data = tzdata.TIMEZONE_DATA
        shorts = [key[:-1] for key in data if key.endswith("0") and key[:-1] not in data]
        assert shorts
        for short, zones in zip(shorts, zones_of(*shorts), strict=True):
            own = next((short[:n] for n in range(len(short), 0, -1) if short[:n] in data), None)
            assert (zones is None) if own is None else set(data[own]) <= set(zones or ()), short

    def test_a_timezone_column_wins_and_a_bad_value_falls_back_to_the_number(self) -> None:
        zones = zones_of(
            "85291234567", "85291234568", "85291234569", "85291234560",
            tz=["Asia/Tokyo", "Not/AZone", None, "  "],
        )
        assert zones == [["Asia/Tokyo"], ["Asia/Hong_Kong"], ["Asia/Hong_Kong"], ["Asia/Hong_Kong"]]


class TestWindow:
    def test_start_is_inside_and_end_is_not(self) -> None:
        assert DAY.contains(time(9)) and DAY.contains(time(19, 59, 59))
        assert not DAY.contains(time(20)) and not DAY.contains(time(8, 59))

    def test_a_window_can_wrap_midnight(self) -> None:
        hong_kong = ["Asia/Hong_Kong"]
        assert NIGHT.is_open(hong_kong, JUNE_15.replace(hour=14))  # 22:00 local
        assert NIGHT.is_open(hong_kong, JUNE_15.replace(hour=23, minute=59))  # 07:59
        assert not NIGHT.is_open(hong_kong, JUNE_15.replace(hour=0))  # 08:00: end is exclusive
        opening = NIGHT.schedule(hong_kong, JUNE_15.replace(hour=2))
        assert opening.opens_at == JUNE_15.replace(hour=13)
        assert opening.closes_at == JUNE_15 + timedelta(days=1)

    def test_it_must_be_open_in_every_zone(self) -> None:
        both = ["Asia/Hong_Kong", "Europe/London"]
        assert DAY.is_open(both, JUNE_15.replace(hour=8, minute=30))  # 16:30 and 09:30
        assert not DAY.is_open(both, JUNE_15.replace(hour=7, minute=30))  # London 08:30
        assert DAY.common_openings(both, JUNE_15)[0] == (JUNE_15.replace(hour=8), JUNE_15.replace(hour=12))

    def test_zones_that_never_share_the_window_never_open(self) -> None:
        schedule = DAY.schedule(["Pacific/Guam", "America/St_Johns"], JUNE_15)
        assert schedule.opens_at is None and schedule.reopens_at is None

    def test_daylight_saving_day_moves_the_opening_in_utc(self) -> None:
        new_york = ["America/New_York"]  # clocks go forward on 2026-03-08
        assert DAY.schedule(new_york, datetime(2026, 3, 7, 5, tzinfo=UTC)).opens_at == datetime(
            2026, 3, 7, 14, tzinfo=UTC
        )
        change_day = DAY.schedule(new_york, datetime(2026, 3, 8, 5, tzinfo=UTC))
        assert change_day.opens_at == datetime(2026, 3, 8, 13, tzinfo=UTC)
        assert change_day.closes_at == datetime(2026, 3, 9, 0, tzinfo=UTC)
        assert DAY.is_open(new_york, datetime(2026, 3, 8, 13, 30, tzinfo=UTC))
        assert not DAY.is_open(new_york, datetime(2026, 3, 7, 13, 30, tzinfo=UTC))

    def test_an_injected_clock_is_used_as_given(self) -> None:
        assert fixed_clock(datetime(2026, 6, 15, 3))() == JUNE_15.replace(hour=3)


class TestDeferral:
    def test_closed_windows_are_deferred_with_the_earliest_opening(self) -> None:
        check = WindowCheck(DAY, JUNE_15.replace(hour=3), batch_size=10, calls_per_second=1.0)
        chunk = pl.DataFrame({"phone": ["85291234567", "12125550123", "13105550123", "999123"]})
        kept = check.sendable(chunk)
        assert kept["phone"].to_list() == ["85291234567", "999123"]  # unknown zones are not held back
        assert check.deferred == 2
        assert check.next_opening == JUNE_15.replace(hour=13)  # 09:00 in New York; Los Angeles opens later

    def test_a_window_closing_before_the_batch_leaves_defers_it_until_the_next_day(self) -> None:
        closes = JUNE_15.replace(hour=12)  # 20:00 in Hong Kong
        now = closes - DEPARTURE_MARGIN - timedelta(seconds=30)
        check = WindowCheck(DAY, now, batch_size=1, calls_per_second=1.0)
        kept = check.sendable(pl.DataFrame({"phone": [f"8529123{n:04d}" for n in range(40)]}))
        assert kept.height == 20  # 30 s to spare at 1.5 s per batch
        assert kept["phone"].to_list() == [f"8529123{n:04d}" for n in range(20)]  # the first ones
        assert check.deferred == 40 - kept.height
        assert check.next_opening == JUNE_15.replace(hour=1) + timedelta(days=1)

    def test_an_australian_mobile_is_deferred_while_it_is_early_in_perth(self) -> None:
        """09:30 in Sydney is 07:30 in Perth: the mobile waits for 09:00 on Cocos, the last +61 zone."""
        sydney_0930 = datetime(2026, 6, 14, 23, 30, tzinfo=UTC)
        check = WindowCheck(DAY, sydney_0930, batch_size=10, calls_per_second=1.0)
        mobile, sydney_landline = "61412345678", "61292345678"
        kept = check.sendable(pl.DataFrame({"phone": [mobile, sydney_landline]}))
        assert kept["phone"].to_list() == [sydney_landline]
        assert check.deferred == 1 and check.next_opening == datetime(2026, 6, 15, 2, 30, tzinfo=UTC)

    def test_positions_run_on_across_chunks(self) -> None:
        now = JUNE_15.replace(hour=12) - DEPARTURE_MARGIN - timedelta(seconds=30)
        check = WindowCheck(DAY, now, batch_size=1, calls_per_second=1.0)
        for _ in range(4):
            check.sendable(pl.DataFrame({"phone": ["85291234567"] * 10}))
        assert check.position == 40 and check.deferred == 40 - 20  # 30 s at 1.5 s per batch


class TestCampaignField:
    def base(self, **window: object) -> dict[str, object]:
        return {"campaign_id": "quiet", "source": {"path": "x.csv"}, "template": "Hi", "send_window": window}

    def test_a_window_parses_from_strings(self) -> None:
        campaign = Campaign.parse(self.base(start="09:00", end="20:00", timezone_column="tz"))
        assert campaign.send_window == SendWindow(start=time(9), end=time(20), timezone_column="tz")
        assert Campaign.parse({**self.base(), "send_window": None}).send_window is None

    def test_an_unquoted_yaml_time_is_refused_not_misread(self, tmp_path: Path) -> None:
        file = tmp_path / "campaign.yaml"
        file.write_text("campaign_id: quiet\nsource: {path: x.csv}\ntemplate: Hi\n"
                        "send_window: {start: '09:00', end: 20:00}\n")  # YAML 1.1: 20:00 is 1200
        with pytest.raises(CampaignFileError, match=r"send_window.end: .*quoted"):
            Campaign.from_yaml(file)

    @pytest.mark.parametrize(
        ("window", "where"),
        [({"start": "25:00", "end": "08:00"}, "send_window.start"),
         ({"start": "09:00", "end": "09:00"}, "send_window"),
         ({"start": "09:00"}, "send_window.end"),
         ({"start": "09:00", "end": "20:00", "timezone_column": ""}, "send_window.timezone_column")],
    )
    def test_bad_windows_name_the_field(self, window: dict[str, object], where: str) -> None:
        with pytest.raises(CampaignFileError, match=rf"\n  {where}: "):
            Campaign.parse(self.base(**window))
