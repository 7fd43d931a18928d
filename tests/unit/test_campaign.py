"""Unit tests for the Campaign model and its YAML loading: bad values are refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from alibaba_sms.credentials import AccessKey
from globe_sms.campaign import Campaign, CampaignFileError, GatewaySettings
from globe_sms.gateway import limit_name_for, named_limit

BASE = {
    "campaign_id": "spring-sale",
    "source": {"path": "recipients.csv"},
    "template": "Hi {first_name}",
    "sender_id": "GlobeSMS",
}


def with_(**changes: object) -> dict[str, object]:
    return {**BASE, **changes}


class TestCampaignFields:
    def test_minimal_campaign_has_safe_defaults(self) -> None:
        campaign = Campaign.parse(BASE)
        assert campaign.batch_size == 1000 and campaign.message_type == "NOTIFY"
        assert campaign.gateway.endpoint == "emulator" and campaign.gateway.signature_version == "v3"
        # the default: tests/{unit,integration}/test_paths.py
        assert campaign.ledger is None and campaign.dry_run is False
        assert campaign.template.text == "Hi {first_name}"

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"campaign_id": "Spring Sale"}, "campaign_id"),
            ({"sender_id": "Globe-SMS"}, "sender_id"),
            ({"sender_id": "GlobeSMS12345"}, "sender_id"),  # 13 characters with letters
            ({"sender_id": "1234567890123456"}, "sender_id"),  # 16 digits
            ({"batch_size": 1001}, "batch_size"),
            ({"message_type": "OTP"}, "message_type"),
            ({"validity_period": 0}, "validity_period"),
            ({"gateway": {"signature_version": "v2"}}, "gateway.signature_version"),
            ({"gateway": {"calls_per_second": 0}}, "gateway.calls_per_second"),
            ({"gateway": {"account": "acme/prod"}}, "gateway.account"),
            ({"surprise": 1}, "surprise"),
        ],
    )
    def test_bad_values_are_refused_naming_the_field(self, changes: dict[str, object], field: str) -> None:
        with pytest.raises(CampaignFileError, match=rf"\b{field}\b"):
            Campaign.parse(with_(**changes))

    @pytest.mark.parametrize("sender", ["GlobeSMS123", "123456789012345", "A"])
    def test_sender_id_limits_accept_what_alibaba_accepts(self, sender: str) -> None:
        """Letters and digits: up to 11 with a letter, up to 15 all digits."""
        assert Campaign.parse(with_(sender_id=sender)).sender_id == sender

    def test_real_endpoint_requires_a_sender_id(self) -> None:
        data = with_(gateway={"endpoint": "https://dysmsapi.ap-southeast-1.aliyuncs.com"})
        del data["sender_id"]
        with pytest.raises(CampaignFileError, match="sender_id is required"):
            Campaign.parse(data)

    def test_task_id_carries_campaign_and_batch(self) -> None:
        assert Campaign.parse(BASE).task_id(7) == "spring-sale-b00007"

    def test_no_secret_field_exists(self) -> None:
        """Credentials never travel in the campaign (and so never in a flow run's parameters)."""
        schema = Campaign.model_json_schema()
        names: list[str] = []
        for definition in [schema, *schema.get("$defs", {}).values()]:
            for name, spec in definition.get("properties", {}).items():
                assert spec.get("format") != "password", name
                if name == "secret_params":  # an http source's query secrets: each value names a SecretRef
                    assert spec["additionalProperties"] == {"$ref": "#/$defs/SecretRef"}
                    continue
                names.append(name)
        assert "gateway" in names and "credentials_block" in names  # the walk reached nested models
        assert not [name for name in names if "secret" in name or "access_key" in name or "password" in name]


class TestCampaignFile:
    def test_example_campaign_loads_with_paths_resolved(self) -> None:
        campaign = Campaign.from_yaml(Path(__file__).parents[2] / "examples" / "welcome.yaml")
        assert Path(campaign.source.path).is_file()
        assert campaign.gateway.endpoint == "emulator"

    def test_missing_file_and_bad_yaml_are_clear(self, tmp_path: Path) -> None:
        with pytest.raises(CampaignFileError, match="cannot read"):
            Campaign.from_yaml(tmp_path / "nope.yaml")
        bad = tmp_path / "bad.yaml"
        bad.write_text("campaign_id: [unclosed")
        with pytest.raises(CampaignFileError, match="not valid YAML"):
            Campaign.from_yaml(bad)

    def test_every_bad_field_is_listed(self, tmp_path: Path) -> None:
        file = tmp_path / "c.yaml"
        file.write_text("campaign_id: BAD ID\nsource: {path: r.csv}\ntemplate: hi\nbatch_size: 5000\n")
        with pytest.raises(CampaignFileError) as info:
            Campaign.from_yaml(file)
        message = str(info.value)
        assert "campaign_id" in message and "batch_size" in message and str(file) in message


class TestAccountRateLimit:
    """Alibaba counts the call rate per account: campaigns of one account share one Prefect limit."""

    KEY_A, KEY_B = AccessKey.of("LTAIkeyA", "secret-a"), AccessKey.of("LTAIkeyB", "secret-b")

    def gateway(self, **settings: object) -> GatewaySettings:
        return GatewaySettings(endpoint="https://dysmsapi.ap-southeast-1.aliyuncs.com", **settings)

    def test_two_keys_of_one_account_share_the_limit(self) -> None:
        settings = self.gateway(account="Acme-Prod")
        names = {limit_name_for(settings, key) for key in (self.KEY_A, self.KEY_B)}
        assert names == {"globe-sms-account-acme-prod"}
        assert named_limit(settings) == "globe-sms-account-acme-prod"

    def test_without_an_account_each_key_has_its_own_limit(self) -> None:
        settings = self.gateway()
        assert limit_name_for(settings, self.KEY_A) == "globe-sms-ltaikeya"
        assert limit_name_for(settings, self.KEY_B) == "globe-sms-ltaikeyb"
        assert named_limit(settings) is None

    def test_an_explicit_limit_name_wins(self) -> None:
        settings = self.gateway(account="acme", rate_limit_name="shared-acme")
        assert limit_name_for(settings, self.KEY_A) == named_limit(settings) == "shared-acme"


class TestLanes:
    """`send_via` picks the lane(s); OTP goes through the single lane only (issue #16)."""

    def test_the_batch_lane_is_the_default(self) -> None:
        campaign = Campaign.parse(BASE)
        assert campaign.send_via == "batch" and campaign.single_chunk_size == 500
        assert campaign.gateway.single_calls_per_second == 2000.0

    @pytest.mark.parametrize("send_via", ["single", "both"])
    def test_the_other_lanes_load(self, send_via: str) -> None:
        assert Campaign.parse(with_(send_via=send_via)).send_via == send_via

    def test_an_unknown_lane_is_refused_naming_the_field(self) -> None:
        with pytest.raises(CampaignFileError, match="send_via"):
            Campaign.parse(with_(send_via="fast"))

    def test_otp_with_the_single_lane_loads(self) -> None:
        campaign = Campaign.parse(with_(send_via="single", message_type="OTP"))
        assert campaign.message_type == "OTP"

    @pytest.mark.parametrize("send_via", [None, "batch", "both"])
    def test_otp_through_the_batch_lane_is_refused_at_load(self, send_via: str | None) -> None:
        data = with_(message_type="OTP") if send_via is None else with_(message_type="OTP", send_via=send_via)
        with pytest.raises(CampaignFileError, match="message_type OTP needs send_via: single"):
            Campaign.parse(data)

    def test_otp_from_a_file_is_refused_with_the_file_named(self, tmp_path: Path) -> None:
        path = tmp_path / "otp.yaml"
        path.write_text(
            "campaign_id: otp\nsource: {path: r.csv}\ntemplate: 'Code {code}'\nmessage_type: OTP\n",
            encoding="utf-8",
        )
        with pytest.raises(CampaignFileError, match=r"otp\.yaml is not a valid campaign") as raised:
            Campaign.from_yaml(path)
        assert "OTP needs send_via: single" in str(raised.value)
