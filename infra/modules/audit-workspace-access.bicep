// Read access to the Log Analytics workspace that holds the vaults' AuditEvent logs, for the blast
// radius of grant findings (what a granted principal did in the vault before the revert). Deployed
// in the workspace's resource group when main.bicep's auditWorkspaceResourceId is set.

@description('Principal (object) id of kvguard\'s user-assigned identity.')
param principalId string

@description('Name of the workspace with the vaults\' AuditEvent logs.')
param workspaceName string

// Log Analytics Reader: query the vaults' AuditEvent logs (read only).
var logAnalyticsReader = '73c42c96-874c-492b-b04d-ab87d138a893'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, principalId, logAnalyticsReader)
  scope: workspace
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', logAnalyticsReader)
  }
}

output customerId string = workspace.properties.customerId
