"""The steps of one event's flow that `kvguard.pipeline` puts in order, one job per module.

`services` is what every step reads through and `context` what one event carries from step to
step; `claims` the leases that fence an attempt; `memory` the baselines and history marks (with
`parsed_baselines`, their cache); `findings` the findings' lifecycle; `acting` alerts,
remediation and the write-ahead intents; `own` kvguard's own writes and deployment; `beside` the
resources beside a vault; `sweeps` reconciliation and the sweep rules; `reasons` the texts of a
record. docs/architecture.md has the table.
"""
