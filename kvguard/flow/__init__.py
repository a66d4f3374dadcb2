"""The steps of one event's flow that `kvguard.pipeline` puts in order, one job per module.

`services` is what every step reads through; `memory` the baselines and history marks; `findings`
the findings' lifecycle; `acting` alerts, remediation and the write-ahead intents; `claims` the
leases that fence an attempt; `own` kvguard's own writes and deployment; `beside` the resources
beside a vault; `sweeps` reconciliation and the sweep rules; `reasons` the texts of a record.
"""
