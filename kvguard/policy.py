"""The policy file (YAML or JSON), validated by Pydantic, with the defaults the README documents.

A policy that does not validate is never half-applied: `load_policy` raises `PolicyError` naming
the file, the field and the problem, and the CLI exits 2.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from kvguard.ids import vault_kind
from kvguard.perimeters import normalised_prefix, subscription_guid

Mode = Literal["observe", "alert", "remediate"]
Severity = Literal["low", "medium", "high", "critical"]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration of days, hours, minutes and seconds (`PT5M`, `P1D`, `PT1H30M`)."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or text.strip().upper() in ("P", "PT"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as PT5M or P1D")
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return timedelta(days=parts.get("d", 0), hours=parts.get("h", 0), minutes=parts.get("m", 0),
                     seconds=parts.get("s", 0))


class _Strict(BaseModel):
    """Policy sections reject unknown keys: a typo must not silently switch a guard off."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


class History(_Strict):
    grant_window: timedelta = timedelta(minutes=10)
    burst_window: timedelta = timedelta(minutes=5)
    burst_threshold: int = Field(default=5, ge=2)
    failure_threshold: int | None = Field(default=None, ge=2, description="defaults to burst_threshold")

    _windows = field_validator("grant_window", "burst_window", mode="before")(_duration)


class CircuitBreaker(_Strict):
    max_remediations: int = Field(default=3, ge=1)
    window: timedelta = timedelta(hours=1)

    _window = field_validator("window", mode="before")(_duration)


class ChangeWindow(_Strict):
    days: list[Day] = Field(min_length=1)
    start: time
    end: time
    timezone: str = "UTC"

    @field_validator("days", mode="before")
    @classmethod
    def _lower_days(cls, value: Any) -> Any:
        return [d.strip().lower()[:3] if isinstance(d, str) else d for d in value] if isinstance(value, list) else value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}") from error
        return value


class RuleOverride(_Strict):
    enabled: bool = True
    severity: Severity | None = None
    remediate: bool | None = None


class Suppression(_Strict):
    """A rule held back on some vaults until a date, for a stated reason (a known exception that is
    being fixed). Expiry is required: a suppression nobody renews stops suppressing."""

    rule: str
    vault: str = Field(min_length=1, description="resource id or name glob, as in excluded_vaults")
    until: AwareDatetime
    reason: str = Field(min_length=1)

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, value: str) -> str:
        from kvguard.catalog import RULES  # the catalog is the one list of rule ids

        if value not in RULES:
            raise ValueError(f"unknown rule id {value!r}; see `kvguard rules`")
        return value

    @field_validator("reason")
    @classmethod
    def _reason_given(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a suppression needs a reason")
        return value.strip()

    def expired(self, now: datetime) -> bool:
        return now >= self.until


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError as error:
        raise ValueError(f"{value!r} is not an IP address or CIDR range") from error


class Policy(_Strict):
    mode: Mode = "alert"
    dry_run: bool = False
    alert_threshold: int = Field(default=40, ge=0, le=100, description="minimum risk for alerts")
    # May be below alert_threshold: a change that is remediated is always alerted too (decision.decide).
    remediate_threshold: int = Field(
        default=70, ge=0, le=100,
        description="minimum risk for remediation in remediate mode; may be below alert_threshold: a "
                    "remediated change is always alerted too, first")
    own_principal_ids: list[str] = Field(default_factory=list)
    approved_callers: list[str] = Field(default_factory=list)
    allowed_networks: list[str] = Field(default_factory=list)
    allowed_ip_rules: list[str] = Field(default_factory=list)
    min_ip_prefix: int = Field(default=24, ge=0, le=32)
    allowed_subnet_subscriptions: list[str] = Field(default_factory=list)
    # Subscriptions whose private endpoints may connect to a vault (KV-PE-01); the vault's own always may.
    allowed_private_endpoint_subscriptions: list[str] = Field(default_factory=list)
    # Workspace, storage account or event hub ids audit logs may go to (KV-LOG-01); empty: any.
    allowed_log_destinations: list[str] = Field(default_factory=list)
    # CIDRs and subscription ids a perimeter access rule over a vault may admit (KV-NSP-01); empty: none.
    allowed_perimeter_sources: list[str] = Field(default_factory=list)
    # Webhook hosts and resource ids a vault's events may go to (KV-EG-01); the vault's own
    # subscription's resources always may.
    allowed_event_destinations: list[str] = Field(default_factory=list)
    change_windows: list[ChangeWindow] = Field(default_factory=list)
    excluded_vaults: list[str] = Field(default_factory=list)
    history: History = Field(default_factory=History)
    circuit_breaker: CircuitBreaker = Field(default_factory=CircuitBreaker)
    rules: dict[str, RuleOverride] = Field(default_factory=dict)
    min_retention_days: int = Field(default=90, ge=7, le=90)
    # Role assignments (and locks) at resource group, subscription and management group scope count
    # for the vaults under them; false: only those on a vault itself or inside it.
    protect_inherited_scopes: bool = True
    # Managed HSMs are protected vaults of kind `hsm` (false: their events are ignored).
    protect_managed_hsms: bool = True
    # How far a key's expiry (`exp`) may be pushed out by one write before KV-KEY-01 fires.
    max_key_expiry_extension_days: int = Field(default=365, ge=0)
    suppressions: list[Suppression] = Field(default_factory=list)
    # kvguard's own deployment: its event subscription(s) and function app (KV-SELF-02 watches them).
    own_resource_ids: list[str] = Field(default_factory=list)

    @field_validator("own_principal_ids", "approved_callers", "allowed_subnet_subscriptions",
                     "allowed_private_endpoint_subscriptions", "allowed_log_destinations")
    @classmethod
    def _lower_ids(cls, value: list[str]) -> list[str]:
        return [v.strip().lower() for v in value if v.strip()]

    @field_validator("allowed_perimeter_sources")
    @classmethod
    def _perimeter_sources(cls, value: list[str]) -> list[str]:
        sources = []
        for entry in (v.strip() for v in value if v.strip()):
            guid = subscription_guid(entry)
            if guid is not None:
                sources.append(guid)
                continue
            try:
                sources.append(normalised_prefix(entry))
            except ValueError:
                raise ValueError(f"{entry!r} is neither a CIDR range nor a subscription id") from None
        return sources

    @field_validator("allowed_event_destinations")
    @classmethod
    def _event_destinations(cls, value: list[str]) -> list[str]:
        return [v.strip().lower().rstrip("/") for v in value if v.strip()]

    @field_validator("own_resource_ids")
    @classmethod
    def _resource_ids(cls, value: list[str]) -> list[str]:
        ids = [v.strip().rstrip("/") for v in value if v.strip()]
        not_ids = [v for v in ids if not v.lower().startswith("/subscriptions/")]
        if not_ids:
            raise ValueError(f"not ARM resource ids (/subscriptions/…): {', '.join(not_ids)}")
        return ids

    @field_validator("allowed_networks", "allowed_ip_rules")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        return [_cidr(v) for v in value]

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: dict[str, RuleOverride]) -> dict[str, RuleOverride]:
        from kvguard.catalog import RULES  # the catalog is the one list of rule ids

        unknown = sorted(set(value) - set(RULES))
        if unknown:
            raise ValueError(f"unknown rule id(s) {', '.join(unknown)}; see `kvguard rules`")
        return value

    def rule(self, rule_id: str) -> RuleOverride:
        return self.rules.get(rule_id, NO_OVERRIDE)

    def protects(self, vault_id: str) -> bool:
        """Whether kvguard protects the vault: every Key Vault, and a Managed HSM unless
        `protect_managed_hsms` is off."""
        return self.protect_managed_hsms or vault_kind(vault_id) != "hsm"

    def merged(self, overrides: dict[str, Any]) -> Policy:
        """This policy with `overrides` laid over it key by key (sections merge one level deep)."""
        data = self.model_dump(mode="python")
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict) and key != "rules":
                data[key] = {**data[key], **value}
            elif key == "rules" and isinstance(value, dict):
                data["rules"] = {**data.get("rules", {}), **value}
            else:
                data[key] = value
        return Policy.model_validate(data)


NO_OVERRIDE = RuleOverride()


class PolicyError(Exception):
    """A policy that cannot be used; the message names the source, the field and the problem."""


def explain_validation(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid policy"]
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (not a policy setting)"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def policy_from_data(data: Any, source: str, base: Policy | None = None) -> Policy:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: invalid policy\n  (top level): expected a mapping of policy keys")
    try:
        return (base or Policy()).merged(data) if base else Policy.model_validate(data)
    except ValidationError as error:
        raise PolicyError(explain_validation(source, error)) from None


# A policy is a page of settings; the limit keeps a wrong file (a log, a dump) from costing
# seconds and gigabytes of parsing before it is refused.
MAX_POLICY_BYTES = 1024 * 1024


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file (YAML or JSON) with the strict reader of `kvguard.datafile`:
    one mapping, no key twice, not empty, at most MAX_POLICY_BYTES."""
    from kvguard.datafile import DataFileError, read_mapping

    try:
        data = read_mapping(path, "policy", MAX_POLICY_BYTES)
    except DataFileError as error:
        raise PolicyError(str(error)) from None
    return policy_from_data(data, str(path))
