"""The handler registry. Each module registers its handlers on import; the imports below fix the
order (alerts first). Adding a handler is adding one decorated plan function in one module."""

from remediation import access_policy, alerts, network, settings  # noqa: F401  (registration)
from remediation.base import HANDLERS, Handler, Operation, PlanInput

__all__ = ["HANDLERS", "Handler", "Operation", "PlanInput"]
