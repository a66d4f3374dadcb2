"""Scenario files for `kvguard replay`, validated before anything runs (the format: README,
"Scenarios and `kvguard replay`").

An invalid scenario is refused whole, with the file, the step and the reason: a replay that ran
half a scenario would report results for a world nobody described.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kvguard.datafile import DataFileError, read_mapping
from kvguard.ids import VaultRef, parse_vault_ref, vault_key
from kvguard.policy import Policy, PolicyError, parse_duration, policy_from_data
from kvguard.resources import is_vault_type, resource_type_of
from kvguard.vault import VaultConfig

STEP_KINDS = ("write", "delete", "event", "events", "activity", "advance", "reconcile")

class ScenarioError(Exception):
    """The message names the file, the step (when there is one) and the problem."""


class Step(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    kind: str
    value: Any
    config: VaultConfig | None = None  # a vault write's configuration, parsed once while validating


class Scenario(BaseModel):
    # Keys beyond the format (an `expect:` block of a test suite, notes) are kept and reported as
    # ignored: a scenario must stay readable by tools that annotate it.
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = "unnamed scenario"
    description: str | None = None
    policy: dict[str, Any] = Field(default_factory=dict)
    clock: datetime | None = None
    baselined: bool = True
    vaults: list[dict[str, Any]] = Field(default_factory=list)
    resources: list[dict[str, Any]] = Field(default_factory=list)  # other ARM resources, as ARM GET JSON
    steps: list[Any] = Field(default_factory=list)

    @field_validator("clock")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class LoadedScenario(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: str
    scenario: Scenario
    policy: Policy
    steps: list[Step]
    ignored_keys: list[str] = []


def load_scenario(path: str | Path, base_policy: Policy | None = None) -> LoadedScenario:
    """Read a scenario with the strict reader of `kvguard.datafile` (one mapping, no key twice; no
    size limit: a load test's scenario is large on purpose) and validate every part of it."""
    source = str(path)
    try:
        data = read_mapping(path, "scenario", max_bytes=None)
    except DataFileError as error:
        raise ScenarioError(str(error)) from None
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as error:
        item = error.errors()[0]
        where = ".".join(str(p) for p in item["loc"])
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        raise ScenarioError(f"{source}: {where}: {message}") from None
    ignored = sorted(scenario.model_extra or {})
    try:
        policy = policy_from_data(scenario.policy, f"{source}: policy", base_policy or Policy())
    except PolicyError as error:
        raise ScenarioError(str(error)) from None
    for index, doc in enumerate(scenario.vaults):
        try:
            _vault(doc)
        except ValueError as error:
            raise ScenarioError(f"{source}: vaults[{index}]: {error}") from None
    for index, doc in enumerate(scenario.resources):
        try:
            _resource(doc)
        except ValueError as error:
            raise ScenarioError(f"{source}: resources[{index}]: {error}") from None
    return LoadedScenario(path=source, scenario=scenario, policy=policy,
                          steps=[_step(source, i, s) for i, s in enumerate(scenario.steps)], ignored_keys=ignored)


def _step(source: str, index: int, raw: Any) -> Step:
    where = f"{source}: step {index + 1}"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ScenarioError(f"{where}: a step has exactly one key, one of {', '.join(STEP_KINDS)}")
    kind, value = next(iter(raw.items()))
    if kind not in STEP_KINDS:
        raise ScenarioError(f"{where}: unknown step {kind!r}; expected one of {', '.join(STEP_KINDS)}")
    if kind == "write":
        try:
            if _is_vault_document(value):
                return Step(kind=kind, value=value, config=_vault(value))
            return Step(kind=kind, value=_resource(value))
        except ValueError as error:
            raise ScenarioError(f"{where} (write): {error}") from None
    elif kind == "delete" and not _deletable(value):
        raise ScenarioError(f"{where} (delete): expected a vault's resource id or another resource's "
                            f"(/subscriptions/… or /providers/…), got {value!r}")
    elif kind == "reconcile" and value not in ({}, None):
        raise ScenarioError(f"{where} (reconcile): takes no options, write `reconcile: {{}}`")
    elif kind == "events" and not isinstance(value, list):
        raise ScenarioError(f"{where} (events): expected a list of envelopes")
    elif kind == "activity" and not isinstance(value, list):
        raise ScenarioError(f"{where} (activity): expected a list of Activity Log records")
    elif kind == "advance":
        try:
            value = parse_duration(value)
        except ValueError as error:
            raise ScenarioError(f"{where} (advance): {error}") from None
        if value <= timedelta(0):
            raise ScenarioError(f"{where} (advance): the clock only moves forward")
    return Step(kind=kind, value=value)


_RESOURCE_ID = re.compile(r"^/(subscriptions|providers)/[^/]+", re.IGNORECASE)


def _deletable(value: Any) -> bool:
    """A vault's id, or the id of a resource that is no part of a vault's own document: inside a
    vault only extension resources (`…/providers/…`), private endpoint connections and keys are."""
    if not isinstance(value, str) or not _RESOURCE_ID.match(value.strip()):
        return False
    ref = parse_vault_ref(value)
    if ref is None or ref.resource_group is None or _vault_ref(value) is not None:
        return True
    inside = value.strip()[len(ref.id):].lower()
    return "/providers/" in inside or inside.startswith(("/privateendpointconnections/", "/keys/"))


def _is_vault_document(doc: Any) -> bool:
    """A write of a vault (its `type` says so, or it has none: vault writes may leave it out) or
    of any other resource (its `type` says which)."""
    stated = doc.get("type") if isinstance(doc, dict) else None
    if isinstance(stated, str) and stated.strip():
        return is_vault_type(stated)
    return True


def _resource(doc: Any) -> dict[str, Any]:
    """An ARM GET body of a resource other than a vault; ValueError naming the field otherwise."""
    if not isinstance(doc, dict):
        raise ValueError(f"expected a resource's ARM JSON object, got {type(doc).__name__}")
    resource_id = doc.get("id")
    if not isinstance(resource_id, str) or not _RESOURCE_ID.match(resource_id.strip()):
        raise ValueError(f"resource.id: {resource_id!r} is not an ARM resource id (/subscriptions/… or /providers/…)")
    if not resource_type_of(doc):
        raise ValueError("resource.type: missing; the type says which resource this is "
                         "(e.g. Microsoft.Authorization/roleAssignments)")
    if is_vault_type(resource_type_of(doc)):
        raise ValueError("resource.type: a vault (or Managed HSM) belongs under vaults:")
    if not isinstance(doc.get("properties", {}), dict):
        raise ValueError("resource.properties: expected an object")
    return doc


def _vault_ref(resource_id: str) -> VaultRef | None:
    """The vault `resource_id` names, when it is a vault's own id (not a sub-resource or a deleted vault)."""
    ref = parse_vault_ref(resource_id)
    if ref is None or ref.resource_group is None or vault_key(ref.id) != vault_key(resource_id):
        return None
    return ref


def _vault(doc: Any) -> VaultConfig:
    """An ARM GET body of a Key Vault; ValueError naming the field otherwise."""
    config = VaultConfig.from_arm(doc)
    if _vault_ref(config.id) is None:
        raise ValueError(f"vault.id: {config.id!r} is not the resource id of a Key Vault "
                         "(/subscriptions/…/resourceGroups/…/providers/Microsoft.KeyVault/vaults/…) "
                         "or of a Managed HSM (…/providers/Microsoft.KeyVault/managedHSMs/…)")
    return config
