// A Microsoft Sentinel scheduled analytics rule over KvguardFindings_CL (its query is
// infra/sentinel-rule.kql): one alert per high or critical finding, the severity mapped to
// Sentinel's (critical becomes High, kvguard's own kept as the custom detail KvguardSeverity), the
// caller, its IP and the affected vault or resource as entities, and one incident per finding.
// Deployed when main.bicep's deploySentinelRule and deployFindingsLog are both true; it turns
// Microsoft Sentinel on for kvguard's workspace when it is not on yet.

param workspaceName string

@description('How often the rule runs, and the window it reads: the same, so every row is read once.')
param schedule string = 'PT5M'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource sentinel 'Microsoft.SecurityInsights/onboardingStates@2023-02-01' = {
  scope: workspace
  name: 'default'
  properties: {}
}

resource rule 'Microsoft.SecurityInsights/alertRules@2023-02-01' = {
  scope: workspace
  name: guid(workspace.id, 'kvguard-findings-rule')
  kind: 'Scheduled'
  dependsOn: [
    sentinel
  ]
  properties: {
    displayName: 'kvguard: Key Vault tampering'
    description: 'A high or critical finding of kvguard (KvguardFindings_CL): who changed which vault or resource, what kvguard found and what it did about it.'
    enabled: true
    query: loadTextContent('../sentinel-rule.kql')
    queryFrequency: schedule
    queryPeriod: schedule
    severity: 'High'
    triggerOperator: 'GreaterThan'
    triggerThreshold: 0
    suppressionEnabled: false
    suppressionDuration: 'PT1H'
    tactics: [
      'Persistence'
      'PrivilegeEscalation'
      'CredentialAccess'
      'DefenseEvasion'
      'Impact'
    ]
    eventGroupingSettings: {
      aggregationKind: 'AlertPerResult'
    }
    alertDetailsOverride: {
      alertDisplayNameFormat: 'kvguard {{Rule}}: {{Title}}'
      alertDescriptionFormat: '{{Title}} on {{AffectedResource}} by {{CallerUpn}} ({{CallerIp}}); kvguard severity {{KvguardSeverity}}'
      alertSeverityColumnName: 'AlertSeverity'
    }
    customDetails: {
      KvguardSeverity: 'KvguardSeverity'
      FindingId: 'FindingId'
      Rule: 'Rule'
      Mitre: 'Mitre'
      Scope: 'Scope'
      Remediation: 'Remediation'
    }
    entityMappings: [
      {
        entityType: 'Account'
        fieldMappings: [
          {
            identifier: 'AadUserId'
            columnName: 'CallerId'
          }
          {
            identifier: 'FullName'
            columnName: 'CallerUpn'
          }
        ]
      }
      {
        entityType: 'IP'
        fieldMappings: [
          {
            identifier: 'Address'
            columnName: 'CallerIp'
          }
        ]
      }
      {
        entityType: 'AzureResource'
        fieldMappings: [
          {
            identifier: 'ResourceId'
            columnName: 'AffectedResource'
          }
        ]
      }
    ]
    incidentConfiguration: {
      createIncident: true
      groupingConfiguration: {
        enabled: true
        reopenClosedIncident: false
        lookbackDuration: 'PT24H'
        matchingMethod: 'Selected'
        groupByCustomDetails: [
          'FindingId'
        ]
        groupByEntities: []
        groupByAlertDetails: []
      }
    }
  }
}

output ruleId string = rule.id
