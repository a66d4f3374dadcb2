"""The README's first screen: what kvguard is, the two commands, the three things a first
deployment needs, and a table of contents whose every link lands on a heading."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
FIRST_SCREEN = "\n".join(README.splitlines()[:45])


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_first_screen_says_what_kvguard_is_the_two_commands_and_what_a_deployment_needs() -> None:
    assert "Azure Key Vault" in FIRST_SCREEN and "alert" in FIRST_SCREEN
    assert "`make run`" in FIRST_SCREEN and "`make test`" in FIRST_SCREEN
    needs = re.search(r"three things\n(.*?)\n\n(?!\d\.)", FIRST_SCREEN, re.S)
    assert needs, "the three things a first deployment needs"
    for thing in ("Sign-in", "subscription", "mode"):
        assert thing in needs.group(1), thing


def test_the_table_of_contents_links_to_headings_that_exist() -> None:
    contents = re.search(r"\*\*Contents\*\*:(.*?)\n\n", FIRST_SCREEN, re.S)
    assert contents, "a table of contents on the first screen"
    anchors = {_anchor(h) for h in re.findall(r"^#{2,4} (.+)$", README, re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", contents.group(1))
    assert len(links) >= 8
    assert [link for link in links if link not in anchors] == []
    for target in re.findall(r"\]\(([^#)][^)]*)\)", contents.group(1)):
        assert (ROOT / target).is_file(), target
