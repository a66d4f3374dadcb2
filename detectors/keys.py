"""Key rules (KV-KEY-*): a key's lifetime controls loosened through ARM's `vaults/keys/write`.

A key that stops rotating, lives years longer, or may now leave the vault (an export flag or a
looser release policy) is a key an attacker has more time with, or can take away. ARM writes of
`Microsoft.KeyVault/vaults/keys` reach Event Grid; the data plane's key operations do not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from kvguard.detection import Case, Context, Hit, rule

KEYS = "microsoft.keyvault/vaults/keys"
_DURATION = re.compile(r"^P(?:(?P<y>\d+)Y)?(?:(?P<m>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
                       r"(?:T(?:(?P<h>\d+)H)?(?:\d+M)?(?:\d+S)?)?$", re.IGNORECASE)
_SECONDS_PER_DAY = 86_400


def duration_days(text: Any) -> float | None:
    """An ISO 8601 duration as Key Vault writes them (`P90D`, `P18M`, `P2Y`) in days, a month
    counted as 30 days and a year as 365 (Key Vault's own reading); None for anything else."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) and text.strip() else None
    if match is None or text.strip().upper() in ("P", "PT"):
        return None
    part = {name: int(value or 0) for name, value in match.groupdict().items()}
    return part["y"] * 365 + part["m"] * 30 + part["w"] * 7 + part["d"] + part["h"] / 24


def _member(mapping: Any, name: str) -> Any:
    """A member of an ARM object whatever the case of its name (`release_policy`, `Release_Policy`)."""
    if not isinstance(mapping, Mapping):
        return None
    return next((v for k, v in mapping.items() if isinstance(k, str) and k.lower() == name.lower()), None)


def _rotation(key: Mapping[str, Any]) -> Mapping[str, Any] | None:
    policy = _member(_member(key, "properties"), "rotationPolicy")
    return policy if isinstance(policy, Mapping) else None


def rotation_age_days(key: Mapping[str, Any]) -> float | None:
    """How old a key version gets before its rotation policy rotates it (the soonest rotate action):
    `timeAfterCreate`, or the policy's `expiryTime` less `timeBeforeExpiry`; None when it never
    rotates by itself."""
    policy = _rotation(key)
    if policy is None:
        return None
    expiry = duration_days(_member(_member(policy, "attributes"), "expiryTime"))
    ages = []
    for action in _member(policy, "lifetimeActions") or []:
        if str(_member(_member(action, "action"), "type") or "").lower() != "rotate":
            continue
        trigger = _member(action, "trigger")
        after_create = duration_days(_member(trigger, "timeAfterCreate"))
        before_expiry = duration_days(_member(trigger, "timeBeforeExpiry"))
        if after_create is not None:
            ages.append(after_create)
        elif before_expiry is not None and expiry is not None:
            ages.append(expiry - before_expiry)
    return min(ages) if ages else None


def _attribute(key: Mapping[str, Any], name: str) -> Any:
    return _member(_member(_member(key, "properties"), "attributes"), name)


def _key_cases() -> list[Case]:
    from detectors.cases import KEY_EXPIRY, ROTATE_YEARLY, release_policy, rotation_policy, vault_key_doc

    notify_only = rotation_policy(("Notify", "timeBeforeExpiry", "P30D"))
    day = 86_400
    return [
        Case("rotation policy removed", fires=True, before=vault_key_doc(), after=vault_key_doc(rotation=None)),
        Case("rotate action dropped (notify only)", fires=True, before=vault_key_doc(),
             after=vault_key_doc(rotation=notify_only)),
        Case("rotation lengthened from a year to five", fires=True, before=vault_key_doc(),
             after=vault_key_doc(rotation=rotation_policy(("Rotate", "timeAfterCreate", "P5Y")))),
        Case("rotation moved to 30 days before a ten-year expiry", fires=True, before=vault_key_doc(),
             after=vault_key_doc(rotation=rotation_policy(("Rotate", "timeBeforeExpiry", "P30D"), expiry="P10Y"))),
        Case("expiry pushed out by two years", fires=True, before=vault_key_doc(),
             after=vault_key_doc(exp=KEY_EXPIRY + 730 * day)),
        Case("expiry removed", fires=True, before=vault_key_doc(), after=vault_key_doc(exp=None)),
        Case("release policy added", fires=True, before=vault_key_doc(), after=vault_key_doc(release=release_policy())),
        Case("release policy re-pointed to another attestation authority", fires=True,
             before=vault_key_doc(release=release_policy()),
             after=vault_key_doc(release=release_policy("https://attacker.weu.attest.azure.net"))),
        Case("exportable turned on", fires=True, before=vault_key_doc(exportable=False),
             after=vault_key_doc(exportable=True, release=None)),
        Case("near miss: rotation shortened", fires=False, before=vault_key_doc(),
             after=vault_key_doc(rotation=rotation_policy(("Rotate", "timeAfterCreate", "P90D")))),
        Case("near miss: expiry pushed out by less than the policy allows", fires=False, before=vault_key_doc(),
             after=vault_key_doc(exp=KEY_EXPIRY + 200 * day)),
        Case("near miss: expiry pushed out two years where the policy allows three", fires=False,
             before=vault_key_doc(), after=vault_key_doc(exp=KEY_EXPIRY + 730 * day),
             policy={"max_key_expiry_extension_days": 1095}),
        Case("near miss: expiry set on a key that had none", fires=False, before=vault_key_doc(exp=None),
             after=vault_key_doc()),
        Case("near miss: key disabled, nothing else", fires=False, before=vault_key_doc(),
             after=vault_key_doc(enabled=False)),
        Case("near miss: a rotation policy added", fires=False, before=vault_key_doc(rotation=None),
             after=vault_key_doc(rotation=ROTATE_YEARLY)),
        Case("near miss: a new key (no baseline)", fires=False, before=None,
             after=vault_key_doc(exportable=True, release=release_policy())),
        Case("near miss: exportable stays on", fires=False, before=vault_key_doc(exportable=True),
             after=vault_key_doc(exportable=True)),
    ]


@rule(
    "KV-KEY-01",
    title="Key rotation, expiry or release loosened",
    severity="medium",
    mitre=("T1552.004",),
    kind="diff",
    cases=_key_cases,
)
def key_loosened(ctx: Context) -> Iterator[Hit]:
    """A key changed through ARM so that it lives longer or may leave the vault: its rotation policy
    removed, its rotate action dropped or moved later, its expiry (`exp`) pushed out by more than
    `max_key_expiry_extension_days` (or removed), its `release_policy` changed, or `exportable`
    turned on (high: the key material can then be released). Alert-only: a key's lifetime settings
    are its owners' call, and putting one back could break the workload that depends on it."""
    state = ctx.resource
    if state is None or state.change.type.lower() != KEYS or state.before is None or state.after is None:
        return
    before, after = state.before, state.after
    base = {"key": state.change.id, "vaults": state.vault_ids}
    was_age, now_age = rotation_age_days(before), rotation_age_days(after)
    if _rotation(before) is not None and _rotation(after) is None:
        yield Hit(evidence={**base, "property": "properties.rotationPolicy", "before": _rotation(before),
                            "after": None}, detail="rotation policy removed")
    elif was_age is not None and now_age is None:
        yield Hit(evidence={**base, "property": "properties.rotationPolicy.lifetimeActions",
                            "before": _member(_rotation(before), "lifetimeActions"),
                            "after": _member(_rotation(after), "lifetimeActions")}, detail="rotate action dropped")
    elif was_age is not None and now_age is not None and now_age > was_age:
        yield Hit(evidence={**base, "property": "properties.rotationPolicy.lifetimeActions",
                            "beforeRotationDays": was_age, "afterRotationDays": now_age},
                  detail="rotation lengthened")
    was_exp, now_exp = _attribute(before, "exp"), _attribute(after, "exp")
    allowed = ctx.policy.max_key_expiry_extension_days * _SECONDS_PER_DAY
    if isinstance(was_exp, int) and (now_exp is None or (isinstance(now_exp, int) and now_exp - was_exp > allowed)):
        yield Hit(evidence={**base, "property": "properties.attributes.exp", "before": was_exp, "after": now_exp,
                            "maxExtensionDays": ctx.policy.max_key_expiry_extension_days},
                  detail="expiry removed" if now_exp is None else "expiry pushed out")
    was_release = _member(_member(before, "properties"), "release_policy")
    now_release = _member(_member(after, "properties"), "release_policy")
    if was_release != now_release:
        yield Hit(evidence={**base, "property": "properties.release_policy", "before": was_release,
                            "after": now_release}, severity="high", detail="release policy changed")
    if _attribute(after, "exportable") is True and _attribute(before, "exportable") is not True:
        yield Hit(evidence={**base, "property": "properties.attributes.exportable",
                            "before": _attribute(before, "exportable"), "after": True},
                  severity="high", detail="key made exportable")
