"""POLICY_REASONS parsing and the reason/action pairing rules (moderation/policy.py)."""

from __future__ import annotations

import pytest

from moderation import policy
from moderation.config import load_settings
from moderation.domain import Action
from moderation.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", dict(policy.DEFAULT_REASONS)),
        (" ; ;", dict(policy.DEFAULT_REASONS)),
        ("ncii=NCII", {"ncii": "NCII"}),
        (
            " spam = Spam or scam ; ncii=Intimate image; ",
            {"spam": "Spam or scam", "ncii": "Intimate image"},
        ),
        ("terms_4=Terms = section 4", {"terms_4": "Terms = section 4"}),  # a label may hold '='
    ],
)
def test_parse_reasons(text, expected):
    parsed = policy.parse_reasons(text)
    assert parsed == expected
    assert list(parsed) == list(expected)  # display order is the configured order


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ncii", "not code=Label"),
        ("NCII=Upper case", "not code=Label"),
        ("bad code=Label", "not code=Label"),
        ("=Label", "not code=Label"),
        ("x" * 51 + "=Too long", "not code=Label"),
        ("ncii=", "needs a printable label"),
        ("ncii=" + "L" * 201, "needs a printable label"),
        ("ncii=tab\there", "needs a printable label"),
        ("ncii=A;ncii=B", "listed twice"),
    ],
)
def test_bad_reasons_name_the_setting(text, message):
    with pytest.raises(ConfigError, match=message) as err:
        policy.parse_reasons(text)
    assert str(err.value).startswith("POLICY_REASONS: ")


def test_settings_refuse_a_bad_list_at_start_up():
    with pytest.raises(ConfigError, match="POLICY_REASONS"):
        load_settings({"POLICY_REASONS": "ncii;spam=Spam"})
    assert load_settings({"POLICY_REASONS": "spam=Spam"}).policy_reasons == "spam=Spam"


def test_the_cli_reports_a_bad_list_clearly(monkeypatch, capsys):
    from moderation.cli import main

    monkeypatch.setenv("POLICY_REASONS", "Not A Code=x")
    assert main(["db", "upgrade"]) == 2
    assert "POLICY_REASONS: 'Not A Code=x' is not code=Label" in capsys.readouterr().err


A, R, E = Action.ALLOW, Action.REMOVE, Action.ESCALATE


@pytest.mark.parametrize(
    ("reason", "allowed"),
    [
        ("ncii", {R, E}),
        ("adult_nudity", {R, E}),
        ("suspected_minor", {E, R}),  # remove: admins in the restricted queue only (review.py)
        ("not_violating", {A}),
        ("unclear", {E}),
        ("spam", {A, R, E}),  # a configured code outside the built-in set: any action
    ],
)
def test_pairing(reason, allowed):
    for action in Action:
        error = policy.pairing_error(reason, action)
        assert (error is None) == (action in allowed), (reason, action, error)


def test_pairing_messages_say_what_fits():
    assert policy.pairing_error("not_violating", R) == "reason 'not_violating' goes with allow, not remove"
    assert policy.pairing_error("ncii", A) == "reason 'ncii' goes with escalate or remove, not allow"
    assert "must be escalated" in str(policy.pairing_error("suspected_minor", A))


def test_reasons_are_parsed_once_per_setting_value():
    assert policy.reasons("a=A") is policy.reasons("a=A")
    with pytest.raises(TypeError):
        policy.reasons("a=A")["b"] = "B"  # type: ignore[index]
