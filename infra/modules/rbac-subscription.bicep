// The roles kvguard's identity needs in each subscription it protects.
// Every assignment is named by guid(scope, principal, role), so re-deployments are idempotent.
targetScope = 'subscription'

@description('Principal (object) id of kvguard\'s user-assigned identity.')
param principalId string

@description('GUID of kvguard\'s custom remediation role (role-definition.bicep): only the actions its handlers and reads declare.')
param remediatorRoleId string

@description('Resource groups to confine the remediation role to; empty: the whole subscription.')
param resourceGroupNames array = []

// Reader: list and read vaults and kvguard's own event subscription for the timer reconciliation.
var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
// Security Assessment Contributor: write kvguard's custom assessments (findings) to Defender for Cloud.
var securityAssessmentContributor = '612c2aa1-cb24-443b-ac28-3ab7272de6f5'

var roles = [
  reader
  securityAssessmentContributor
]

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in roles: {
  name: guid(subscription().id, principalId, role)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource remediator 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (empty(resourceGroupNames)) {
  name: guid(subscription().id, principalId, remediatorRoleId)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', remediatorRoleId)
  }
}

module remediatorInGroups 'rbac-group.bicep' = [for group in resourceGroupNames: {
  name: 'kvguard-remediator-${group}'
  scope: resourceGroup(group)
  params: {
    principalId: principalId
    remediatorRoleId: remediatorRoleId
  }
}]
