"""The pieces behind deployments that explain themselves, without a server: `globe_sms.checkout` (the
GLOBE_SMS_HOME checks and the pull step) and `globe_sms.scheduled_names` (run names of scheduled runs). The
same behaviour against a real Prefect server and worker: tests/integration/test_deploy_checks.py.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_deploy_checks.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from globe_sms.checkout import deploy_time_problem, home_problem, run_time_problem
from globe_sms.scheduled_names import campaign_run_name

ROOT = Path(__file__).resolve().parents[2]


class TestCheckout:
    def test_home_problem_names_what_is_wrong(self, tmp_path: Path) -> None:
        assert home_problem(str(ROOT)) is None
        assert home_problem(None) == home_problem("  ") == home_problem("{{ $GLOBE_SMS_HOME }}")
        assert "absolute" in str(home_problem("globe-sms"))
        assert "not a directory" in str(home_problem(str(tmp_path / "x")))
        assert "no prefect.yaml" in str(home_problem(str(tmp_path)))
        assert deploy_time_problem({"GLOBE_SMS_HOME": str(ROOT)}) is None
        assert str(deploy_time_problem({})).startswith("GLOBE_SMS_HOME is not set: set it to the absolute")
        assert deploy_time_problem({}, ROOT / "prefect.yaml") is not None  # its pull step uses it
        own = tmp_path / "prefect.yaml"
        own.write_text("pull:\n  - prefect.deployments.steps.set_working_directory: {directory: /srv/x}\n")
        assert deploy_time_problem({}, own) is None  # a prefect.yaml of one's own that does not

    def test_the_run_time_line_says_where_it_looked(self, tmp_path: Path) -> None:
        assert run_time_problem(str(ROOT)) is None
        assert run_time_problem(str(tmp_path)) == (
            f"the worker cannot find the globe-sms code at {tmp_path}: set GLOBE_SMS_HOME when deploying "
            "(docs/deployments.md)"
        )
        assert "was not set when deploying" in str(run_time_problem(""))

    def test_enter_checkout_moves_there_like_set_working_directory(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        from globe_sms.checkout import enter_checkout

        monkeypatch.chdir(tmp_path)
        assert enter_checkout(str(ROOT)) == {"directory": str(ROOT)}
        assert Path.cwd() == ROOT
        monkeypatch.delenv("PREFECT__FLOW_RUN_ID", raising=False)
        with pytest.raises(SystemExit) as stopped:
            enter_checkout(str(tmp_path / "gone"))
        assert stopped.value.code == 1


class TestScheduledNames:
    def test_a_dated_campaign_is_named_by_its_scheduled_date_in_its_zone(self) -> None:
        sunday_evening_utc = datetime(2026, 5, 3, 20, 0, tzinfo=UTC)
        params = {"campaign": {"campaign_id": "weekly-news-{date:Asia/Singapore}"}}
        assert campaign_run_name(params, sunday_evening_utc) == "weekly-news-2026-05-04"
        assert campaign_run_name({"campaign": {"campaign_id": "fixed"}}, sunday_evening_utc) == "fixed"
        assert campaign_run_name({}, sunday_evening_utc) is None
        unknown_zone = {"campaign": {"campaign_id": "x-{date:Nowhere/City}"}}
        assert campaign_run_name(unknown_zone, sunday_evening_utc) is None
