"""The remediation contract: a handler only *plans* concrete operations from the restore intents
of the findings routed to it (`kvguard.intents`); the shared runner in `kvguard.actions` owns
applying them, idempotency checks, audit and error collection.

An `Operation` is what a person reads in dry-run output and in the audit record ("remove
permissions secrets:get,list for object X on vault V"), and also exactly what gets applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from kvguard.detection import Finding
from kvguard.intents import PolicyExemptionRef, RestoreIntent, RoleAssignmentRef
from kvguard.ports import Alert
from kvguard.vault import AccessPolicy, VaultConfig

if TYPE_CHECKING:
    from kvguard.resources import ResourceState

OperationKind = Literal[
    "add_access_policy", "remove_access_policy", "patch", "put_resource", "alert", "resolve", "delete_role_assignment",
    "delete_policy_exemption", "remove_rule_sources", "delete_resource"]


@dataclass(frozen=True)
class Operation:
    """One write. `target` is what the write sets (the patch, the entry to remove, the alert)."""

    handler: str
    kind: OperationKind
    vault_id: str
    description: str
    target: AccessPolicy | Mapping[str, Any] | Alert | RoleAssignmentRef | PolicyExemptionRef
    before: Any = None
    rules: tuple[str, ...] = ()


Intent = TypeVar("Intent", bound=RestoreIntent)


@dataclass(frozen=True)
class PlanInput:
    """What a handler plans from: its own findings, the baseline and the current configuration
    (of the vault; for a change to another resource, `resource` holds that resource's)."""

    findings: Sequence[Finding]
    before: VaultConfig | None
    after: VaultConfig | None
    alerts: Sequence[Alert] = ()
    resource: ResourceState | None = None

    def restores(self, kind: type[Intent]) -> list[tuple[Finding, Intent]]:
        """The restore intents of one type that the findings carry, each with its finding, in the
        order the findings fired."""
        return [(finding, intent) for finding in self.findings for intent in finding.restore
                if isinstance(intent, kind)]

    @property
    def rules(self) -> list[str]:
        """The ids of the rules whose findings the handler answers, sorted."""
        return sorted({finding.rule for finding in self.findings})


def patch_operation(
    handler_id: str, vault: VaultConfig, patch: Mapping[str, Any], description: str, rules: Iterable[str]
) -> Operation:
    """A PATCH of top-level vault properties, with their current values kept as `before`."""
    current = vault.raw.get("properties", {})
    return Operation(
        handler=handler_id,
        kind="patch",
        vault_id=vault.id,
        description=description,
        target=dict(patch),
        before={name: current.get(name) for name in patch},
        rules=tuple(sorted(rules)),
    )


def put_resource_operation(
    handler_id: str, resource_id: str, document: Mapping[str, Any], current: Mapping[str, Any] | None,
    description: str, rules: Iterable[str],
) -> Operation:
    """A PUT of a resource beside the vault (`document` is the body), with its current ARM JSON kept
    as `before`. The runner re-reads the resource before it writes and skips a PUT it no longer needs."""
    return Operation(
        handler=handler_id,
        kind="put_resource",
        vault_id=resource_id,
        description=description,
        target=dict(document),
        before=dict(current) if current is not None else None,
        rules=tuple(sorted(rules)),
    )


Plan = Callable[[PlanInput], list[Operation]]


@dataclass(frozen=True)
class Handler:
    """A declared handler. `accepts` is the restore intent types a remediation handler acts on
    (an alert handler takes alerts and accepts none): every rule that names it as its remediation
    must build intents of these types (tests/unit/test_catalog.py checks each firing case)."""

    id: str
    kind: Literal["alert", "remediation"]
    permission: str
    plan: Plan
    description: str
    module: str
    irreversible: bool = False
    accepts: tuple[type[RestoreIntent], ...] = ()

    def __call__(self, data: PlanInput) -> list[Operation]:
        return self.plan(data)


def handler(
    id: str, *, kind: Literal["alert", "remediation"], permission: str, irreversible: bool = False,
    accepts: tuple[type[RestoreIntent], ...] = (),
) -> Callable[[Plan], Handler]:
    """Declare a handler (the catalog registers it). `permission` is the Azure action it needs,
    which the infra must grant; `accepts`, for a remediation handler, the restore intent types it
    plans from."""

    def declare(fn: Plan) -> Handler:
        return Handler(
            id=id,
            kind=kind,
            permission=permission,
            plan=fn,
            description=" ".join((fn.__doc__ or "").split()),
            module=fn.__module__,
            irreversible=irreversible,
            accepts=accepts,
        )

    return declare
