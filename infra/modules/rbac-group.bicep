// kvguard's remediation role on one resource group, when remediation is confined to resource groups.
// The assignment is named by guid(scope, principal, role), so re-deployments are idempotent.

@description('Principal (object) id of kvguard\'s user-assigned identity.')
param principalId string

@description('GUID of kvguard\'s custom remediation role (role-definition.bicep).')
param remediatorRoleId string

resource remediator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, remediatorRoleId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', remediatorRoleId)
  }
}
