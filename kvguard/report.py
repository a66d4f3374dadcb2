"""The readable outcome report (rich tables): the same facts as `--json`, for people.

Replay, `replay --live` and redrive print their outcomes with `outcomes_table`; every value in it
is data (`kvguard.terminal.cell`), never markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TextIO

from rich.table import Table
from rich.text import Text

from kvguard.blast_radius import summary as blast_radius_summary
from kvguard.detection import Finding
from kvguard.ids import parse_vault_ref
from kvguard.outcome import Outcome
from kvguard.replay import ReplayRun
from kvguard.terminal import cell, console, lines, print_table, print_tokens

STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "none": "dim"}
OUTCOME_STYLE = {"processed": "bold", "self": "green", "duplicate": "dim", "ignored": "dim", "rejected": "magenta"}


def print_report(runs: list[ReplayRun], summary: dict[str, Any], out: TextIO, *, wide: bool = False) -> None:
    target = console(out)
    for run in runs:
        title = f"{run.scenario.scenario.name}  ({run.scenario.path})"
        print_table(target, outcomes_table(run.outcomes, title, wide=wide, numbered=True), wide=wide)
    print_tokens(target, summary_tokens(summary["summary"]))


def outcomes_table(outcomes: Sequence[Outcome], title: str, *, wide: bool = False, numbered: bool = False) -> Table:
    """One row per outcome. The event id wraps rather than being cut (`wide`: it stays whole on one
    line, and resources are named by their full id); a `resource` column appears when a record is
    not a vault's own (a role assignment, a lock, kvguard's function app)."""
    table = Table(title=Text(title), title_justify="left", show_lines=True, expand=not wide)
    with_resource = any(_resource(o) for o in outcomes)
    if numbered:
        table.add_column("#", justify="right", no_wrap=True)
    table.add_column("event", overflow="fold", no_wrap=wide, ratio=None if wide else 1, min_width=10)
    table.add_column("outcome", no_wrap=True)
    table.add_column("vault", overflow="fold", no_wrap=wide, ratio=None if wide else 1, min_width=12)
    if with_resource:
        table.add_column("resource", overflow="fold", no_wrap=wide, ratio=None if wide else 1, min_width=12)
    table.add_column("risk", justify="right", no_wrap=True)
    table.add_column("findings", overflow="fold", ratio=None if wide else 2)
    table.add_column("actions", overflow="fold", ratio=None if wide else 3)
    for number, outcome in enumerate(outcomes, 1):
        row: list[Text] = [cell(str(number))] if numbered else []
        row += [cell(outcome.event_id or "-"), cell((outcome.outcome, OUTCOME_STYLE.get(outcome.outcome, ""))),
                cell(_vault_name(outcome.vault, wide))]
        if with_resource:
            resource = _resource(outcome)
            row.append(cell(resource if wide or resource is None else _short(resource)) if resource else cell("-"))
        row += [
            cell((f"{outcome.risk} {outcome.severity}", STYLE.get(outcome.severity, ""))) if outcome.findings
            else cell("-"),
            lines(finding_cell(f) for f in outcome.findings) if outcome.findings else cell((outcome.reason, "dim")),
            _actions(outcome),
        ]
        table.add_row(*row)
    return table


def _resource(outcome: Outcome) -> str | None:
    """The changed resource when it is not the record's vault."""
    if outcome.resource is None or (outcome.vault and outcome.resource.lower() == outcome.vault.lower()):
        return None
    return outcome.resource


def _vault_name(vault_id: str | None, wide: bool) -> str:
    if not vault_id:
        return "-"
    if wide:
        return vault_id
    ref = parse_vault_ref(vault_id)
    return ref.name if ref else _short(vault_id)


def _short(resource_id: str) -> str:
    """`roleAssignments/0b1c…` for a resource id: its last type and name."""
    parts = [p for p in resource_id.split("/") if p]
    return "/".join(parts[-2:]) if len(parts) >= 2 else resource_id


def _actions(outcome: Outcome) -> Text:
    rows = [cell(f"{a.handler}: ", (a.status, "bold"), f" {a.detail}") for a in outcome.actions]
    resolved = sorted({r for a in outcome.resolutions if a.status == "applied" for r in a.rules})
    if resolved:
        rows.append(cell((f"resolved {', '.join(resolved)}", "green")))
    return lines(rows) if rows else cell("-")


def finding_cell(finding: Finding) -> Text:
    """A finding as its rule (in its severity's colour), its title and the blast radius."""
    line = cell((finding.rule, STYLE.get(finding.severity, "")), f" {finding.title}")
    radius = blast_radius_summary(finding.evidence.get("blast_radius"))
    return lines([line, cell(("  blast radius:", "dim"), f" {radius}")]) if radius else line


def summary_tokens(totals: dict[str, Any]) -> list[Text]:
    """The summary counts for a person, as tokens that are never split across lines:
    `3 events: processed 2, self 1 | findings: KV-AP-01 x1 | actions: revert_access_policy applied 1`."""
    tokens = [cell((f"{totals['events']} events:", "bold"))]
    tokens += _joined([f"{k} {v}" for k, v in sorted(totals["outcomes"].items())], ",")
    tokens.append(cell("| findings:"))
    tokens += _joined([f"{k} x{v}" for k, v in sorted(totals["findings"].items())], ",") or [cell("none")]
    tokens.append(cell("| actions:"))
    tokens += _joined(_action_totals(totals["actions"]), ";") or [cell("none")]
    return tokens


def _joined(items: list[str], separator: str) -> list[Text]:
    return [cell(item + (separator if i < len(items) - 1 else "")) for i, item in enumerate(items)]


def _action_totals(actions: dict[str, dict[str, int]]) -> list[str]:
    """`{handler: {status: count}}` as `handler applied 2 skipped 1`, one per handler."""
    return [
        f"{handler_id} " + " ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
        for handler_id, statuses in sorted(actions.items())
    ]
