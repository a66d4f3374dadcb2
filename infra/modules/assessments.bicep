// Defender for Cloud custom assessment metadata: one per kvguard rule, named by the rule's
// deterministic assessment GUID, so that the findings the app writes land on these definitions.
// infra/rules.json is the rule catalog exactly as `kvguard rules --json` prints it.
targetScope = 'subscription'

var rules = loadJsonContent('../rules.json')

// Defender knows Low, Medium and High; kvguard's critical is Defender's High.
var severities = {
  low: 'Low'
  medium: 'Medium'
  high: 'High'
  critical: 'High'
}

// Per rule family (the middle part of the rule id): Defender category, threats, and the effort
// and user impact of fixing what the rule finds.
var families = {
  AP: {
    categories: [
      'IdentityAndAccess'
      'Data'
    ]
    threats: [
      'elevationOfPrivilege'
      'dataExfiltration'
      'maliciousInsider'
    ]
    userImpact: 'Low'
    implementationEffort: 'Low'
  }
  NET: {
    categories: [
      'Networking'
    ]
    threats: [
      'dataExfiltration'
      'threatResistance'
    ]
    userImpact: 'Moderate'
    implementationEffort: 'Low'
  }
  PROT: {
    categories: [
      'Data'
    ]
    threats: [
      'dataSpillage'
      'elevationOfPrivilege'
      'threatResistance'
    ]
    userImpact: 'Low'
    implementationEffort: 'Low'
  }
  ID: {
    categories: [
      'IdentityAndAccess'
    ]
    threats: [
      'accountBreach'
      'maliciousInsider'
    ]
    userImpact: 'Low'
    implementationEffort: 'Moderate'
  }
  LIFE: {
    categories: [
      'Data'
    ]
    threats: [
      'denialOfService'
      'maliciousInsider'
    ]
    userImpact: 'High'
    implementationEffort: 'High'
  }
  SELF: {
    categories: [
      'IdentityAndAccess'
    ]
    threats: [
      'accountBreach'
      'elevationOfPrivilege'
      'threatResistance'
    ]
    userImpact: 'Low'
    implementationEffort: 'Moderate'
  }
  RBAC: {
    categories: [
      'IdentityAndAccess'
    ]
    threats: [
      'elevationOfPrivilege'
      'dataExfiltration'
      'maliciousInsider'
    ]
    userImpact: 'Moderate'
    implementationEffort: 'Low'
  }
  LOG: {
    categories: [
      'Data'
    ]
    threats: [
      'threatResistance'
      'maliciousInsider'
    ]
    userImpact: 'Low'
    implementationEffort: 'Low'
  }
  LOCK: {
    categories: [
      'Data'
    ]
    threats: [
      'denialOfService'
      'threatResistance'
    ]
    userImpact: 'Low'
    implementationEffort: 'Low'
  }
  PE: {
    categories: [
      'Networking'
    ]
    threats: [
      'dataExfiltration'
      'threatResistance'
    ]
    userImpact: 'Moderate'
    implementationEffort: 'Low'
  }
  DEF: {
    categories: [
      'Data'
    ]
    threats: [
      'threatResistance'
    ]
    userImpact: 'Low'
    implementationEffort: 'Low'
  }
  TAG: {
    categories: [
      'IdentityAndAccess'
    ]
    threats: [
      'maliciousInsider'
      'threatResistance'
    ]
    userImpact: 'Low'
    implementationEffort: 'Low'
  }
  POL: {
    categories: [
      'Data'
    ]
    threats: [
      'threatResistance'
      'maliciousInsider'
    ]
    userImpact: 'Low'
    implementationEffort: 'Low'
  }
  NSP: {
    categories: [
      'Networking'
    ]
    threats: [
      'dataExfiltration'
      'threatResistance'
    ]
    userImpact: 'Moderate'
    implementationEffort: 'Low'
  }
  EG: {
    categories: [
      'Data'
    ]
    threats: [
      'dataExfiltration'
      'dataSpillage'
    ]
    userImpact: 'Low'
    implementationEffort: 'Low'
  }
  DENY: {
    categories: [
      'IdentityAndAccess'
    ]
    threats: [
      'threatResistance'
      'maliciousInsider'
    ]
    userImpact: 'Low'
    implementationEffort: 'Moderate'
  }
  PIM: {
    categories: [
      'IdentityAndAccess'
      'Data'
    ]
    threats: [
      'elevationOfPrivilege'
      'dataExfiltration'
      'maliciousInsider'
    ]
    userImpact: 'Low'
    implementationEffort: 'Low'
  }
  KEY: {
    categories: [
      'Data'
    ]
    threats: [
      'dataExfiltration'
      'threatResistance'
    ]
    userImpact: 'Low'
    implementationEffort: 'Low'
  }
  DRIFT: {
    categories: [
      'Data'
    ]
    threats: [
      'threatResistance'
    ]
    userImpact: 'Low'
    implementationEffort: 'Low'
  }
  other: {
    categories: [
      'Data'
    ]
    threats: [
      'threatResistance'
    ]
    userImpact: 'Low'
    implementationEffort: 'Moderate'
  }
}

// What the remediation handler named in the catalog does, in the words of a runbook.
var remediations = {
  revert_access_policy: 'kvguard removes the added principals or the added permissions (remediate mode). Otherwise: confirm the change with the vault owner and remove unapproved access policy entries.'
  restore_network: 'kvguard restores publicNetworkAccess and the network rules to the last accepted configuration (remediate mode). Otherwise: restore the vault firewall and review who opened it.'
  restore_settings: 'kvguard restores RBAC authorization and the enabledFor* settings to the last accepted configuration (remediate mode). Otherwise: restore the setting and review who changed it.'
  enable_purge_protection: 'Enable purge protection on the vault (irreversible; kvguard does it only when the policy opts in).'
  remove_role_assignment: 'kvguard deletes the added role assignment, re-reading it first (remediate mode; privileged roles only when the rule opts in). Otherwise: confirm the assignment with the vault owner and remove it if it was not approved.'
  restore_diagnostic_setting: 'kvguard puts the vault diagnostic setting back as it was (remediate mode). Otherwise: restore the audit logs to the SIEM and review who removed them.'
  reject_private_endpoint: 'kvguard rejects the private endpoint connection (remediate mode). Otherwise: reject the connection and review who approved it.'
  restore_lock: 'Put the lock back (kvguard does it only when the policy opts in and its identity may write locks).'
  remove_policy_exemption: 'Remove the policy exemption, or put it back as it was (kvguard does it only when the policy opts in and its identity may write policy exemptions). Otherwise: confirm the exemption with the policy owner and remove it if it was not approved.'
  restore_policy_assignment: 'Set the policy assignment back to its enforcement mode and excluded scopes (kvguard does it only when the policy opts in and its identity may write policy assignments; a deleted assignment is re-created by its owner).'
  remove_perimeter_rule_source: 'Take the added sources out of the perimeter access rule (kvguard does it only when the policy opts in and its identity may write the perimeter access rules); return an association to Enforced and review who changed it.'
  remove_event_subscription: 'Delete the event subscription that sends the vault events away (kvguard does it only when the policy opts in and its identity may delete event subscriptions); review who created it.'
  restore_defender_plan: 'Switch Defender for Key Vault back on for the subscription (kvguard does it only when the policy opts in and its identity is Security Admin).'
  none: 'Review the change in the activity log with the vault owner; if it was not approved, revert it and investigate the caller.'
}

// Per rule (same order as rules): its family's Defender attributes and its remediation text.
var familyOf = [for rule in rules: contains(families, split(rule.id, '-')[1]) ? families[split(rule.id, '-')[1]] : families.other]
var remediationOf = [for rule in rules: contains(remediations, rule.remediation ?? 'none') ? remediations[rule.remediation ?? 'none'] : remediations.none]

resource metadata 'Microsoft.Security/assessmentMetadata@2021-06-01' = [for (rule, i) in rules: {
  name: rule.assessment
  properties: {
    displayName: 'kvguard ${rule.id}: ${rule.title}'
    description: rule.rationale
    remediationDescription: remediationOf[i]
    severity: severities[rule.severity]
    assessmentType: 'CustomerManaged'
    categories: familyOf[i].categories
    threats: familyOf[i].threats
    userImpact: familyOf[i].userImpact
    implementationEffort: familyOf[i].implementationEffort
  }
}]

output count int = length(rules)
