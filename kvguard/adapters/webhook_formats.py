"""The webhook's message bodies, one per `KVGUARD_WEBHOOK_FORMAT`:

- `json` (the default): `{"text": …, "alert": {…}}`, the structured alert for anything that parses it.
- `teams`: an Adaptive Card 1.4 in the message envelope that Teams Workflows ("Post to a channel
  when a webhook request is received") accepts; Workflows accept Adaptive Cards only.
- `slack`: Block Kit (header, fields, context) for a Slack incoming webhook, within its limits.

Every name in a message comes from an event or a vault (a caller's UPN, a vault, a rule's title
naming a principal): it is data, escaped for the format, so that it can never ping a channel
(`<!channel>`), make a link (`<https://…|text>`, `[text](https://…)`) or change the formatting.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from kvguard.adapters.eventgrid import alert_data
from kvguard.ids import parse_vault_ref
from kvguard.ports import Alert

WebhookFormat = Literal["json", "teams", "slack"]

# Block Kit's limits (docs.slack.dev, reference/block-kit): a header's text, a section field's
# text, a context element's text; an incoming webhook's `text` is cut long before Slack's 40,000.
SLACK_HEADER = 150
SLACK_FIELD = 2000
SLACK_TEXT = 3000

ADAPTIVE_CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
ADAPTIVE_CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
TEAMS_COLOR = {"critical": "Attention", "high": "Attention", "medium": "Warning", "low": "Default"}

# Markdown's punctuation that starts emphasis, code, links, headings, lists, quotes, tables, HTML,
# entities (`&lt;`) and autolinks (`:` breaks `https://`): escaped with a backslash, as CommonMark
# allows for any punctuation.
_TEAMS_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~:&])")


def slack_escape(text: str) -> str:
    """Slack reads `<…>` as a mention or link and `&` as an entity: the three are written as
    entities, so nothing in `text` is a control sequence."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def teams_escape(text: str) -> str:
    """Teams renders a TextBlock's and a fact's text as Markdown: every Markdown punctuation mark
    is escaped, so `text` shows as written and never as a link or formatting."""
    return _TEAMS_MARKDOWN.sub(r"\\\1", text)


def alert_text(alert: Alert) -> str:
    """The alert in one line (unescaped): the `json` format's text."""
    by = f" by {alert.caller}" if alert.caller else ""
    vault = _vault(alert.vault_id)
    return f"kvguard [{alert.severity.upper()}] {alert.rule} {alert.title} on {vault}{by} (risk {alert.risk})"


def resolved_text(vault_id: str, rule: str) -> str:
    return f"kvguard resolved: {rule} on {_vault(vault_id)}"


def _vault(vault_id: str) -> str:
    ref = parse_vault_ref(vault_id)
    return ref.name if ref else vault_id


def _facts(alert: Alert) -> list[tuple[str, str]]:
    """What a person needs to act on an alert, in the order they read it."""
    return [
        ("Severity", f"{alert.severity} (risk {alert.risk})"),
        ("Vault", _vault(alert.vault_id)),
        ("Caller", alert.caller or "unknown"),
        ("Revert", alert.revert or "none: alert only"),
        ("MITRE", ", ".join(alert.mitre) or "-"),
        ("Event", alert.event_id),
        ("Time", alert.time.isoformat()),
    ]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- json -------------------------------------------------------------------------------------


def json_alert(alert: Alert) -> dict[str, Any]:
    return {"text": alert_text(alert), "alert": alert_data(alert)}


def json_resolved(vault_id: str, rule: str) -> dict[str, Any]:
    return {"text": resolved_text(vault_id, rule), "resolved": {"vaultId": vault_id, "rule": rule}}


# ---- teams ------------------------------------------------------------------------------------


def _teams_message(heading: str, color: str, text: str, facts: list[tuple[str, str]]) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": teams_escape(heading), "weight": "Bolder", "size": "Medium", "color": color,
         "wrap": True},
        {"type": "TextBlock", "text": teams_escape(text), "wrap": True},
    ]
    if facts:
        body.append({"type": "FactSet",
                     "facts": [{"title": title, "value": teams_escape(value)} for title, value in facts]})
    card = {"$schema": ADAPTIVE_CARD_SCHEMA, "type": "AdaptiveCard", "version": "1.4", "body": body,
            "fallbackText": teams_escape(f"{heading}: {text}")}
    return {"type": "message",
            "attachments": [{"contentType": ADAPTIVE_CARD_CONTENT_TYPE, "contentUrl": None, "content": card}]}


def teams_alert(alert: Alert) -> dict[str, Any]:
    return _teams_message(f"kvguard {alert.severity.upper()}: {alert.rule}",
                          TEAMS_COLOR.get(alert.severity, "Default"), alert.title, _facts(alert))


def teams_resolved(vault_id: str, rule: str) -> dict[str, Any]:
    return _teams_message(f"kvguard resolved: {rule}", "Good", f"{rule} no longer holds on {_vault(vault_id)}",
                          [("Vault", _vault(vault_id))])


# ---- slack ------------------------------------------------------------------------------------


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": _clip(slack_escape(text), limit), "emoji": False}


def _slack_message(heading: str, text: str, facts: list[tuple[str, str]]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(heading, SLACK_HEADER)},
        {"type": "section", "text": _plain(text, SLACK_TEXT)},
    ]
    shown, rest = facts[:4], facts[4:]
    if shown:
        blocks.append({"type": "section", "fields": [_plain(f"{t}: {v}", SLACK_FIELD) for t, v in shown]})
    if rest:
        blocks.append({"type": "context", "elements": [_plain(f"{t}: {v}", SLACK_TEXT) for t, v in rest]})
    # `text` is the notification's line (and what a client without blocks shows); `mrkdwn: false`
    # keeps Slack from formatting it.
    return {"text": _clip(slack_escape(f"{heading}: {text}"), SLACK_TEXT), "mrkdwn": False, "blocks": blocks}


def slack_alert(alert: Alert) -> dict[str, Any]:
    return _slack_message(f"kvguard {alert.severity.upper()}: {alert.rule}", alert.title, _facts(alert))


def slack_resolved(vault_id: str, rule: str) -> dict[str, Any]:
    return _slack_message(f"kvguard resolved: {rule}", f"{rule} no longer holds on {_vault(vault_id)}",
                          [("Vault", _vault(vault_id))])


AlertBody = Callable[[Alert], dict[str, Any]]
ResolvedBody = Callable[[str, str], dict[str, Any]]

FORMATS: dict[str, tuple[AlertBody, ResolvedBody]] = {
    "json": (json_alert, json_resolved),
    "teams": (teams_alert, teams_resolved),
    "slack": (slack_alert, slack_resolved),
}
