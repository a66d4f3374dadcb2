"""What the commands share: exit statuses, the JSON Lines encoding of `--json`, and loading the
scenario files of `replay` (simulated or `--live`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvguard.policy import Policy
    from kvguard.scenario import LoadedScenario

EXIT_INVALID = 2
EXIT_UNREACHABLE = 1


def credential_of(args: argparse.Namespace) -> Any:
    """The Azure credential of the commands that call Azure: the one `main` was given, else
    DefaultAzureCredential (imported only now), made once per run and wrapped so that a failed
    sign-in stops the command with one line that says so (`SignInError`)."""
    from kvguard.adapters.signin import SignedIn

    if not isinstance(args.credential, SignedIn):
        credential = args.credential
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        args.credential = SignedIn(credential)
    return args.credential


def dump_json(obj: Any) -> str:
    return json.dumps(obj, default=str, separators=(", ", ": "))


def load_scenarios(paths: Sequence[str], base: Policy) -> list[LoadedScenario]:
    """Every scenario, validated before any runs. A large scenario is millions of small objects
    that live until the end: the cyclic collector is paused while they are built and then told to
    leave them alone (gc.freeze), or its full passes would rescan them for every event replayed."""
    import gc

    from kvguard.scenario import load_scenario

    gc.disable()
    try:
        loaded = [load_scenario(path, base) for path in paths]
    finally:
        gc.enable()
    gc.freeze()
    # A replay then makes many short-lived objects per event: collecting the youngest generation
    # every 700 allocations (the default) costs it about 8 %; a run is short and bounded.
    gc.set_threshold(50_000, 20, 100)
    for scenario in loaded:
        if scenario.ignored_keys:
            sys.stderr.write(f"kvguard: {scenario.path}: ignored key(s) {', '.join(scenario.ignored_keys)} "
                             "(not part of the scenario format)\n")
    return loaded
