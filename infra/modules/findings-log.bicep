// The findings table for Sentinel: KvguardFindings_CL in kvguard's Log Analytics workspace, fed
// through the Logs Ingestion API (a data collection endpoint and rule; the app's identity may
// publish to that rule only), and the kvguard workbook over it. Deployed when main.bicep's
// deployFindingsLog is true.

@description('Principal (object) id of kvguard\'s user-assigned identity.')
param principalId string

param workspaceName string
param dataCollectionEndpointName string
param dataCollectionRuleName string
param location string
param tags object = {}

@minValue(30)
@maxValue(730)
@description('How long the table keeps findings (interactive retention).')
param retentionInDays int = 90

// The table's schema; kvguard/findings_table.py writes exactly these columns (a test compares).
var columns = [
  {
    name: 'TimeGenerated'
    type: 'datetime'
  }
  {
    name: 'EventId'
    type: 'string'
  }
  {
    name: 'EventTime'
    type: 'datetime'
  }
  {
    name: 'VaultId'
    type: 'string'
  }
  {
    name: 'ResourceId'
    type: 'string'
  }
  {
    name: 'Scope'
    type: 'string'
  }
  {
    name: 'Vaults'
    type: 'dynamic'
  }
  {
    name: 'Operation'
    type: 'string'
  }
  {
    name: 'Outcome'
    type: 'string'
  }
  {
    name: 'Risk'
    type: 'int'
  }
  {
    name: 'RiskSeverity'
    type: 'string'
  }
  {
    name: 'RecordType'
    type: 'string'
  }
  {
    name: 'Rule'
    type: 'string'
  }
  {
    name: 'Severity'
    type: 'string'
  }
  {
    name: 'Score'
    type: 'int'
  }
  {
    name: 'Title'
    type: 'string'
  }
  {
    name: 'Mitre'
    type: 'string'
  }
  {
    name: 'Handler'
    type: 'string'
  }
  {
    name: 'ActionKind'
    type: 'string'
  }
  {
    name: 'Status'
    type: 'string'
  }
  {
    name: 'Detail'
    type: 'string'
  }
  {
    name: 'CallerId'
    type: 'string'
  }
  {
    name: 'CallerUpn'
    type: 'string'
  }
  {
    name: 'CallerIp'
    type: 'string'
  }
  {
    name: 'LatencyToDecisionMs'
    type: 'long'
  }
  {
    name: 'LatencyToRevertMs'
    type: 'long'
  }
]
var tableName = 'KvguardFindings_CL'
var streamName = 'Custom-${tableName}'
// Monitoring Metrics Publisher: send rows to the data collection rule (Logs Ingestion API).
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource table 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = {
  parent: workspace
  name: tableName
  properties: {
    plan: 'Analytics'
    retentionInDays: retentionInDays
    schema: {
      name: tableName
      columns: columns
    }
  }
}

resource endpoint 'Microsoft.Insights/dataCollectionEndpoints@2023-03-11' = {
  name: dataCollectionEndpointName
  location: location
  tags: tags
  properties: {
    networkAcls: {
      publicNetworkAccess: 'Enabled'
    }
  }
}

resource rule 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: dataCollectionRuleName
  location: location
  tags: tags
  dependsOn: [
    table
  ]
  properties: {
    dataCollectionEndpointId: endpoint.id
    streamDeclarations: {
      '${streamName}': {
        columns: columns
      }
    }
    destinations: {
      logAnalytics: [
        {
          name: 'findings'
          workspaceResourceId: workspace.id
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          streamName
        ]
        destinations: [
          'findings'
        ]
        transformKql: 'source'
        outputStream: streamName
      }
    ]
  }
}

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(rule.id, principalId, monitoringMetricsPublisher)
  scope: rule
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(workspace.id, 'kvguard-workbook')
  location: location
  tags: tags
  kind: 'shared'
  dependsOn: [
    table
  ]
  properties: {
    displayName: 'kvguard: Key Vault tampering'
    category: 'workbook'
    sourceId: workspace.id
    serializedData: loadTextContent('../workbook.json')
  }
}

output endpoint string = endpoint.properties.logsIngestion.endpoint
output ruleId string = rule.properties.immutableId
output streamName string = streamName
