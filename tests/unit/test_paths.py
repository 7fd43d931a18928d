"""Unit tests of where a campaign's files live: `globe_sms.paths` and `Campaign.resolve_paths`.

What a user does with them (the same campaign file run from two directories, a campaign without a file, the
spools of crashed runs) is in tests/integration/test_campaign_paths.py.

Here: the pure part (no server, no network, no subprocess); the rest is in
tests/integration/test_paths.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from globe_sms.campaign import PATH_FIELDS, Campaign
from globe_sms.paths import (
    DATA_DIR_ENV,
    default_data_dir,
    default_ledger_url,
    resolve_path,
)

BASE = Path("/srv/campaigns")


def campaign(**changes: object) -> Campaign:
    data: dict[str, object] = {
        "campaign_id": "spring-sale",
        "source": {"path": "lists/recipients-*.csv"},
        "template": "Hi {first_name}",
        "sender_id": "GlobeSMS",
        "price_table": "prices.csv",
        "validation": {"suppression_file": "../opt-outs.txt"},
        "ledger": "sqlite:///state/ledger.db",
        "data_dir": ".data",
    }
    return Campaign.parse({**data, **changes})


class TestDefaultDataDir:
    def test_the_environment_variable_wins(self, tmp_path: Path) -> None:
        env = {DATA_DIR_ENV: str(tmp_path / "d"), "XDG_DATA_HOME": "/xdg"}
        assert default_data_dir(env) == tmp_path / "d"
        assert default_ledger_url(env) == f"sqlite:///{tmp_path / 'd' / 'ledger.db'}"

    def test_else_xdg_data_home_else_the_home_directory(self) -> None:
        assert default_data_dir({"XDG_DATA_HOME": "/xdg"}) == Path("/xdg/globe-sms")
        home = Path.home() / ".local" / "share" / "globe-sms"
        assert default_data_dir({}) == home
        assert default_data_dir({"XDG_DATA_HOME": "relative/xdg"}) == home  # XDG: relative is ignored
        assert default_data_dir({DATA_DIR_ENV: "  "}) == home

    def test_it_does_not_follow_the_current_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv(DATA_DIR_ENV)
        monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
        first = default_ledger_url()
        monkeypatch.chdir(tmp_path)
        assert default_ledger_url() == first == f"sqlite:///{tmp_path / 'xdg' / 'globe-sms' / 'ledger.db'}"

    def test_the_test_suite_never_writes_into_the_home_directory(self) -> None:
        assert not default_data_dir().is_relative_to(Path.home() / ".local")


class TestResolvePath:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("r.csv", "/srv/campaigns/r.csv"),
            ("exports/*.csv", "/srv/campaigns/exports/*.csv"),
            ("../shared/opt-outs.txt", "/srv/shared/opt-outs.txt"),
            ("/data/r.csv", "/data/r.csv"),
        ],
    )
    def test_relative_paths_and_globs_resolve_against_the_base(self, value: str, expected: str) -> None:
        assert resolve_path(value, BASE) == expected

    def test_a_home_path_is_expanded(self) -> None:
        assert resolve_path("~/lists/r.csv", BASE) == str(Path.home() / "lists" / "r.csv")


class TestResolvePaths:
    def test_every_relative_path_becomes_absolute_against_the_base(self) -> None:
        resolved = campaign().resolve_paths(BASE)
        assert resolved.source.path == "/srv/campaigns/lists/recipients-*.csv"  # type: ignore[union-attr]
        assert resolved.price_table == "/srv/campaigns/prices.csv"
        assert resolved.validation.suppression_file == "/srv/opt-outs.txt"
        assert resolved.ledger == "sqlite:////srv/campaigns/state/ledger.db"
        assert resolved.data_dir == "/srv/campaigns/.data"
        assert resolved.data_folder == Path("/srv/campaigns/.data")

    def test_it_is_idempotent_and_leaves_the_original_alone(self) -> None:
        original = campaign()
        once = original.resolve_paths(BASE)
        assert once.resolve_paths(Path("/elsewhere")) == once
        assert original.source.path == "lists/recipients-*.csv"  # type: ignore[union-attr]
        assert original.validation.suppression_file == "../opt-outs.txt"

    def test_absolute_paths_and_non_file_ledgers_are_unchanged(self) -> None:
        absolute = campaign(
            source={"path": "/data/r.csv"}, price_table="/data/p.csv", validation={}, data_dir=None,
            ledger="postgresql+psycopg://app@db/sms",
        )
        assert absolute.resolve_paths(BASE) == absolute

    def test_an_opt_out_list_from_a_file_source_resolves_too(self) -> None:
        rules = {"suppression": {"kind": "csv", "path": "opt-outs/*.csv"}}
        resolved = campaign(validation=rules).resolve_paths(BASE)
        opt_outs = resolved.validation.suppression
        assert opt_outs.path == "/srv/campaigns/opt-outs/*.csv"  # type: ignore[union-attr]
        query = {"kind": "postgres", "query": "SELECT phone FROM o", "connection": {"env": "X"}}
        from_postgres = campaign(validation={"suppression": query})
        assert from_postgres.resolve_paths(BASE).validation == from_postgres.validation

    def test_sources_without_a_path_are_left_as_they_are(self) -> None:
        http = campaign(source={"kind": "http", "url": "https://crm.example.com/r"})
        assert http.resolve_paths(BASE).source == http.source

    def test_unset_ledger_and_data_dir_mean_the_default_data_folder(self, globe_sms_data_dir: Path) -> None:
        plain = campaign(ledger=None, data_dir=None).resolve_paths(BASE)
        assert plain.ledger is None and plain.data_dir is None
        assert plain.ledger_location == f"sqlite:///{globe_sms_data_dir / 'ledger.db'}"
        assert plain.data_folder == globe_sms_data_dir

    def test_every_path_field_names_a_field_of_the_campaign(self) -> None:
        """A renamed field must be renamed in PATH_FIELDS too, or its paths would silently stay relative."""
        for field_path in PATH_FIELDS:
            model: type = Campaign
            for name in field_path[:-1]:
                model = model.model_fields[name].annotation  # type: ignore[attr-defined]
            last = field_path[-1]
            if field_path in (("source", "path"), ("validation", "suppression", "path")):
                continue  # a union of sources: only the file kinds have a path (tests above)
            assert last in model.model_fields, field_path  # type: ignore[attr-defined]

    def test_from_yaml_resolves_against_the_files_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        folder = tmp_path / "campaigns"
        folder.mkdir()
        file = folder / "c.yaml"
        file.write_text(
            "campaign_id: c1\nsource: {path: r.csv}\ntemplate: hi\nledger: sqlite:///ledger.db\n"
            "data_dir: out\nvalidation: {suppression_file: stop.txt}\n"
        )
        monkeypatch.chdir(tmp_path)
        loaded = Campaign.from_yaml("campaigns/c.yaml")
        assert loaded.source.path == str(folder / "r.csv")  # type: ignore[union-attr]
        assert loaded.ledger == f"sqlite:///{folder / 'ledger.db'}"
        assert loaded.data_folder == folder / "out"
        assert loaded.validation.suppression_file == str(folder / "stop.txt")
