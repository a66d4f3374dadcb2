"""The readable replay report (rich tables): the same facts as `--json`, for people."""

from __future__ import annotations

from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kvguard.blast_radius import summary as blast_radius_summary
from kvguard.detection import Finding
from kvguard.replay import ReplayRun

STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "none": "dim"}
OUTCOME_STYLE = {"processed": "bold", "self": "green", "duplicate": "dim", "ignored": "dim", "rejected": "magenta"}


def print_report(runs: list[ReplayRun], summary: dict[str, Any], out: TextIO) -> None:
    console = Console(file=out, width=180, highlight=False)
    for run in runs:
        table = Table(title=f"{run.scenario.scenario.name}  ({run.scenario.path})", title_justify="left",
                      show_lines=True, expand=True)
        table.add_column("#", justify="right", width=3)
        table.add_column("event", max_width=14, overflow="ellipsis")
        table.add_column("outcome", width=9)
        table.add_column("vault", max_width=18, overflow="fold")
        table.add_column("risk", justify="right", width=13)
        table.add_column("findings", ratio=2)
        table.add_column("actions", ratio=3)
        for number, outcome in enumerate(run.outcomes, 1):
            findings = "\n".join(_finding(f) for f in outcome.findings)
            actions = "\n".join(f"{a.handler}: [bold]{a.status}[/] {a.detail}" for a in outcome.actions)
            resolved = sorted({r for a in outcome.resolutions if a.status == "applied" for r in a.rules})
            if resolved:
                actions += f"\n[green]resolved {', '.join(resolved)}[/]"
            if not findings:
                findings = f"[dim]{outcome.reason}[/]"
            table.add_row(
                str(number),
                outcome.event_id or "-",
                f"[{OUTCOME_STYLE[outcome.outcome]}]{outcome.outcome}[/]",
                (outcome.vault or outcome.resource or "-").rsplit("/", 1)[-1],
                f"[{STYLE[outcome.severity]}]{outcome.risk} {outcome.severity}[/]" if outcome.findings else "-",
                findings,
                actions or "-",
            )
        console.print(table)
    console.print(summary_line(summary["summary"]))


def _finding(finding: Finding) -> str:
    line = f"[{STYLE[finding.severity]}]{finding.rule}[/] {finding.title}"
    radius = blast_radius_summary(finding.evidence.get("blast_radius"))
    return f"{line}\n  [dim]blast radius:[/] {escape(radius)}" if radius else line


def summary_line(totals: dict[str, Any]) -> str:
    """The summary counts in one line, for a person."""
    return (
        f"[bold]{totals['events']} events[/]: "
        + ", ".join(f"{k} {v}" for k, v in sorted(totals["outcomes"].items()))
        + " | findings: " + (", ".join(f"{k} x{v}" for k, v in sorted(totals["findings"].items())) or "none")
        + " | actions: " + (_action_totals(totals["actions"]) or "none")
    )


def _action_totals(actions: dict[str, dict[str, int]]) -> str:
    """`{handler: {status: count}}` as `handler applied 2 skipped 1; other_handler failed 1`."""
    return "; ".join(
        f"{handler_id} " + " ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
        for handler_id, statuses in sorted(actions.items())
    )
