"""The catalog: every rule and every handler kvguard has, registered in one fixed order.

Rules and handlers are declared beside their code (`@rule` in `detectors/`, `@handler` in
`remediation/`); the two functions below name the modules, in the order the catalog lists them,
and register what each declares. The composition roots (`kvguard.runtime`, `kvguard.replay`, the
CLI) call `load()`; a registry also loads itself on its first read, so a pipeline built by hand
sees the same catalog.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvguard.detection import Rule
from kvguard.registry import Registry, declared
from remediation.base import Handler

if TYPE_CHECKING:
    from kvguard.policy import Policy


def _load_rules(registry: Registry[Rule]) -> None:
    from detectors import (
        access_policy,
        audit_logs,
        azure_policy,
        defender_plan,
        deny,
        drift,
        eligibility,
        event_feeds,
        identity,
        keys,
        lifecycle,
        locks,
        network,
        perimeters,
        private_endpoints,
        protection,
        rbac,
        steering,
    )
    from detectors import self as own_identity

    for family in (access_policy, network, protection, identity, lifecycle, own_identity, rbac, audit_logs, locks,
                   private_endpoints, defender_plan, steering, deny, eligibility, keys, drift,
                   azure_policy, perimeters, event_feeds):
        for rule in declared(family, Rule):
            registry.add(rule.id, rule)


def _load_handlers(registry: Registry[Handler]) -> None:
    from remediation import (
        access_policy,
        alerts,
        event_feeds,
        network,
        perimeters,
        policy,
        resources,
        role_assignment,
        settings,
    )

    for family in (access_policy, alerts, network, settings, role_assignment, resources, policy,
                   perimeters, event_feeds):
        for handler in declared(family, Handler):
            registry.add(handler.id, handler)


RULES: Registry[Rule] = Registry("rule", load=_load_rules)
HANDLERS: Registry[Handler] = Registry("handler", load=_load_handlers)


def load() -> None:
    """Register every rule and handler now (the composition root's first step)."""
    RULES.load()
    HANDLERS.load()


def alert_handlers() -> tuple[str, ...]:
    """The alerting handlers, in catalog order: alerts go out in this order, before any remediation."""
    return tuple(h.id for h in HANDLERS.values() if h.kind == "alert")


def remediating_handlers(policy: Policy) -> tuple[str, ...]:
    """The remediation handlers the policy can run: those of a rule that remediates by default or
    that the policy opts in (`rules: {<id>: {remediate: true}}`). An opt-in handler's right is the
    operator's to grant (README, "Opt-in rights"), so `kvguard doctor` asks for it only then."""
    wanted = []
    for rule in RULES.values():
        override = policy.rule(rule.id).remediate
        if rule.remediation and (override if override is not None else rule.remediate_by_default):
            wanted.append(rule.remediation)
    return tuple(dict.fromkeys(wanted))


def remediation_rights(policy: Policy) -> dict[str, str]:
    """The Azure action each remediation handler the policy can run needs (handler id → its
    declared permission): what a deny setting must not take from kvguard's identity (KV-DENY-01)."""
    return {h: HANDLERS[h].permission for h in remediating_handlers(policy)
            if HANDLERS[h].permission.lower().startswith("microsoft.")}
