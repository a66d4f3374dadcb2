"""The webhook's formats against a local HTTPS receiver that checks each body as the service would:
an Adaptive Card 1.4 in the Teams Workflows envelope (the card checked against the rules of the
published schema, adaptivecards.io/schemas/1.4.0), Block Kit within Slack's limits, today's JSON.
Names from events are escaped for the format: they never ping, link or format (issue 19, 12a)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from kvguard.adapters.webhook import WebhookAlertSink, WebhookError
from kvguard.adapters.webhook_formats import slack_alert, slack_escape, teams_alert, teams_escape
from kvguard.settings import Settings
from kvguard.sinks import build_sinks
from tests.integration.armfake import ArmFake, arm_fake
from tests.integration.test_alert_sinks import VAULT_ID, make_alert

# ---- the receivers' checks ----------------------------------------------------------------------

_ELEMENT_COMMON = {"fallback": {}, "height": {}, "separator": {"type": "boolean"}, "spacing": {},
                   "id": {"type": "string"}, "isVisible": {"type": "boolean"}, "requires": {"type": "object"}}


def _one_of(*names: str) -> dict[str, str]:
    """The published schema's enums: lower-case names, matched case-insensitively."""
    return {"type": "string", "pattern": f"(?i)^({'|'.join(names)})$"}


ADAPTIVE_CARD_1_4 = {
    "$schema": "http://json-schema.org/draft-06/schema#",
    "definitions": {
        "TextBlock": {
            "type": "object", "additionalProperties": False, "required": ["type", "text"],
            "properties": {
                "type": {"enum": ["TextBlock"]}, "text": {"type": "string"},
                "color": _one_of("default", "dark", "light", "accent", "good", "warning", "attention"),
                "fontType": _one_of("default", "monospace"), "horizontalAlignment": _one_of("left", "center", "right"),
                "isSubtle": {"type": "boolean"}, "maxLines": {"type": "number"},
                "size": _one_of("default", "small", "medium", "large", "extraLarge"),
                "weight": _one_of("default", "lighter", "bolder"), "wrap": {"type": "boolean"}, **_ELEMENT_COMMON,
            },
        },
        "Fact": {"type": "object", "additionalProperties": False, "required": ["title", "value"],
                 "properties": {"title": {"type": "string"}, "value": {"type": "string"}}},
        "FactSet": {
            "type": "object", "additionalProperties": False, "required": ["type", "facts"],
            "properties": {"type": {"enum": ["FactSet"]},
                           "facts": {"type": "array", "items": {"$ref": "#/definitions/Fact"}}, **_ELEMENT_COMMON},
        },
        "AdaptiveCard": {
            "type": "object", "additionalProperties": False, "required": ["type", "version", "body"],
            "properties": {
                "type": {"enum": ["AdaptiveCard"]}, "version": {"enum": ["1.0", "1.1", "1.2", "1.3", "1.4"]},
                "body": {"type": "array", "items": {"anyOf": [{"$ref": "#/definitions/TextBlock"},
                                                               {"$ref": "#/definitions/FactSet"}]}},
                "actions": {"type": "array"}, "fallbackText": {"type": "string"}, "speak": {"type": "string"},
                "lang": {"type": "string"}, "minHeight": {"type": "string"},
                "$schema": {"type": "string", "format": "uri"},
            },
        },
    },
    # The envelope Teams Workflows' "When a Teams webhook request is received" trigger accepts.
    "type": "object", "required": ["type", "attachments"],
    "properties": {
        "type": {"enum": ["message"]},
        "attachments": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["contentType", "content"],
            "properties": {"contentType": {"enum": ["application/vnd.microsoft.card.adaptive"]},
                           "contentUrl": {"type": ["string", "null"]},
                           "content": {"$ref": "#/definitions/AdaptiveCard"}},
        }},
    },
}

_TEXT = {"type": "object", "required": ["type", "text"], "additionalProperties": False,
         "properties": {"type": {"enum": ["plain_text", "mrkdwn"]}, "text": {"type": "string", "minLength": 1},
                        "emoji": {"type": "boolean"}, "verbatim": {"type": "boolean"}}}


def _limited(limit: int) -> dict[str, Any]:
    return {"allOf": [_TEXT, {"properties": {"text": {"maxLength": limit}}}]}


BLOCK_KIT = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object", "required": ["text", "blocks"],
    "properties": {
        "text": {"type": "string", "minLength": 1}, "mrkdwn": {"type": "boolean"},
        "blocks": {"type": "array", "minItems": 1, "maxItems": 50, "items": {"oneOf": [
            {"type": "object", "required": ["type", "text"], "additionalProperties": False,
             "properties": {"type": {"const": "header"}, "block_id": {"type": "string", "maxLength": 255},
                            "text": {"allOf": [_limited(150), {"properties": {"type": {"const": "plain_text"}}}]}}},
            {"type": "object", "required": ["type"], "additionalProperties": False,
             "anyOf": [{"required": ["text"]}, {"required": ["fields"]}],
             "properties": {"type": {"const": "section"}, "block_id": {"type": "string", "maxLength": 255},
                            "text": _limited(3000),
                            "fields": {"type": "array", "minItems": 1, "maxItems": 10, "items": _limited(2000)}}},
            {"type": "object", "required": ["type", "elements"], "additionalProperties": False,
             "properties": {"type": {"const": "context"}, "block_id": {"type": "string", "maxLength": 255},
                            "elements": {"type": "array", "minItems": 1, "maxItems": 10, "items": _TEXT}}},
        ]}},
    },
}


def _problems(schema: dict[str, Any]) -> Callable[[Any], list[str]]:
    validator = jsonschema.validators.validator_for(schema)(schema, format_checker=jsonschema.FormatChecker())
    return lambda body: [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]


def _json_problems(body: Any) -> list[str]:
    missing = [key for key in ("text", "alert") if key not in body] if "resolved" not in body else []
    return [f"missing {key}" for key in missing]


CHECKS = {"teams": _problems(ADAPTIVE_CARD_1_4), "slack": _problems(BLOCK_KIT), "json": _json_problems}


@pytest.fixture
def fake() -> Iterator[ArmFake]:
    with arm_fake() as running:
        yield running


@pytest.fixture
def ca_bundle(fake: ArmFake, tmp_path: Path) -> Path:
    return fake.write_ca_bundle(tmp_path / "ca.pem")


@pytest.fixture
def session(ca_bundle: Path) -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.verify = str(ca_bundle)
        yield s


def _sink(fake: ArmFake, session: requests.Session, message_format: str) -> WebhookAlertSink:
    fake.webhook_check = CHECKS[message_format]
    return WebhookAlertSink(f"{fake.base_url}/webhook/{message_format}", session=session,
                            message_format=message_format)  # type: ignore[arg-type]


# ---- the formats ---------------------------------------------------------------------------------


def test_the_receivers_refuse_what_the_services_refuse() -> None:
    card = teams_alert(make_alert())
    assert CHECKS["teams"](card) == []
    broken = {**card, "attachments": [{**card["attachments"][0],
                                       "content": {**card["attachments"][0]["content"], "version": "2.0"}}]}
    assert CHECKS["teams"](broken)
    assert CHECKS["teams"]({"text": "legacy connector card"})
    blocks = slack_alert(make_alert())
    assert CHECKS["slack"](blocks) == []
    long_header = {"type": "header", "text": {"type": "plain_text", "text": "x" * 151}}
    assert CHECKS["slack"]({**blocks, "blocks": [long_header]})
    assert CHECKS["slack"]({**blocks, "blocks": blocks["blocks"] * 20})  # more than 50 blocks


def test_teams_gets_an_adaptive_card_with_severity_vault_caller_and_revert(
    fake: ArmFake, session: requests.Session
) -> None:
    _sink(fake, session, "teams").raise_alert(make_alert(revert="revert_access_policy"))

    (message,) = fake.webhooks
    card = message["attachments"][0]["content"]
    assert card["version"] == "1.4"
    heading, title, facts = card["body"]
    assert heading["text"] == r"kvguard CRITICAL\: KV\-AP\-01" and heading["color"] == "Attention"
    assert title["text"] == "Access policy added for an unknown principal"
    shown = {fact["title"]: fact["value"] for fact in facts["facts"]}
    assert shown["Severity"] == r"critical \(risk 100\)"
    assert shown["Vault"] == r"kv\-signing"
    assert shown["Caller"] == r"intruder@contoso\.example"
    assert shown["Revert"] == r"revert\_access\_policy"


def test_slack_gets_block_kit_with_severity_vault_caller_and_revert(fake: ArmFake, session: requests.Session) -> None:
    _sink(fake, session, "slack").raise_alert(make_alert(revert="revert_access_policy"))

    (message,) = fake.webhooks
    assert message["mrkdwn"] is False
    header, text, fields, context = message["blocks"]
    assert header["text"]["text"] == "kvguard CRITICAL: KV-AP-01"
    assert text["text"]["text"] == "Access policy added for an unknown principal"
    assert [f["text"] for f in fields["fields"]] == [
        "Severity: critical (risk 100)", "Vault: kv-signing", "Caller: intruder@contoso.example",
        "Revert: revert_access_policy"]
    assert "Event: 9d1f6a2e-3b4c-4d5e-8f70-a1b2c3d4e5f6" in [e["text"] for e in context["elements"]]


def test_an_alert_only_finding_says_so_and_json_stays_as_it_was(fake: ArmFake, session: requests.Session) -> None:
    _sink(fake, session, "slack").raise_alert(make_alert())
    _sink(fake, session, "json").raise_alert(make_alert())

    slack, plain = fake.webhooks
    assert "Revert: none: alert only" in [f["text"] for f in slack["blocks"][2]["fields"]]
    assert set(plain) == {"text", "alert"} and plain["alert"]["rule"] == "KV-AP-01"


@pytest.mark.parametrize("message_format", ["teams", "slack", "json"])
def test_a_resolution_is_valid_in_every_format(fake: ArmFake, session: requests.Session, message_format: str) -> None:
    _sink(fake, session, message_format).resolve(VAULT_ID, "KV-PROT-03")
    (message,) = fake.webhooks
    assert "KV" in str(message) and "kv" in str(message)


def test_an_oversized_title_is_cut_to_slacks_limits_not_refused(fake: ArmFake, session: requests.Session) -> None:
    _sink(fake, session, "slack").raise_alert(make_alert(title="t" * 5000, rule="KV-" + "X" * 200))
    (message,) = fake.webhooks
    assert len(message["blocks"][0]["text"]["text"]) == 150


def test_a_body_the_receiver_refuses_is_a_permanent_failure(fake: ArmFake, session: requests.Session) -> None:
    sink = _sink(fake, session, "teams")
    fake.webhook_check = CHECKS["slack"]  # a Teams card posted where Slack's blocks are expected
    with pytest.raises(WebhookError):
        sink.raise_alert(make_alert())


def test_the_format_is_a_setting(fake: ArmFake, ca_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_bundle))
    monkeypatch.setenv("KVGUARD_WEBHOOK_URL", f"{fake.base_url}/webhook/teams")
    monkeypatch.setenv("KVGUARD_WEBHOOK_FORMAT", "teams")
    sink = build_sinks(Settings(), credential=None)["notify_webhook"]
    fake.webhook_check = CHECKS["teams"]
    sink.raise_alert(make_alert())
    assert fake.webhooks[0]["type"] == "message"
    monkeypatch.setenv("KVGUARD_WEBHOOK_FORMAT", "discord")
    with pytest.raises(ValueError, match="webhook_format"):
        Settings()


# ---- names from events never ping, link or format -----------------------------------------------

HOSTILE = st.one_of(
    st.sampled_from(["<!channel>", "<!here|here>", "<@U024BE7LH>", "<https://evil.example|click here>",
                     "[click](https://evil.example)", "*bold* _it_ ~s~ `code`", "**x** __y__", "# heading",
                     "![i](https://evil.example/i.png)", "<https://evil.example>", "a&lt;b", "> quote", "1. list",
                     "back\\slash", "<at>General</at>"]),
    st.text(alphabet="<>!@&|[]()*_~`#\\:/.-+ abhtps", min_size=1, max_size=40),
)
MARKDOWN = MarkdownIt("commonmark").enable("strikethrough").enable("table")


@settings(max_examples=150, deadline=None)
@given(name=HOSTILE)
def test_slack_text_holds_no_control_sequence_and_reads_as_written(name: str) -> None:
    escaped = slack_escape(name)
    assert "<" not in escaped and ">" not in escaped
    assert re.sub(r"&(amp|lt|gt);", "", escaped).count("&") == 0
    assert html.unescape(escaped) == name
    message = slack_alert(make_alert(caller=name, title=f"Change by {name}"))
    for text in re.findall(r"'text': '((?:[^'\\]|\\.)*)'", str(message)):
        assert "<" not in text and ">" not in text


@settings(max_examples=150, deadline=None)
@given(name=HOSTILE)
def test_teams_text_renders_as_written_without_links_or_formatting(name: str) -> None:
    rendered = MARKDOWN.render(teams_escape(name))
    assert not re.search(r"<(a|img|em|strong|code|s|h\d|ol|ul|li|blockquote|table|hr)\b", rendered), rendered
    inner = re.sub(r"^<p>|</p>\n?$", "", rendered.strip())
    # A browser collapses runs of white space, so the text reads as written when the words match.
    assert " ".join(html.unescape(inner).split()) == " ".join(name.split())
