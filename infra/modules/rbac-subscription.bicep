// The roles kvguard's identity needs in each subscription it protects.
// Every assignment is named by guid(subscription, principal, role), so re-deployments are idempotent.
targetScope = 'subscription'

@description('Principal (object) id of kvguard\'s user-assigned identity.')
param principalId string

// Key Vault Contributor: revert access policies (accessPolicies/remove), network rules and vault
// settings through Azure Resource Manager. It grants no data-plane access to secrets, keys or certificates.
var keyVaultContributor = 'f25e0fa2-a7c8-4377-a976-54943a77a395'
// Reader: list and read vaults across the subscription for the timer reconciliation.
var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
// Security Assessment Contributor: write kvguard's custom assessments (findings) to Defender for Cloud.
var securityAssessmentContributor = '612c2aa1-cb24-443b-ac28-3ab7272de6f5'
// Monitoring Contributor: put a vault's deleted or disabled diagnostic setting back
// (Microsoft.Insights/diagnosticSettings/write, restore_diagnostic_setting). Restoring locks
// (Microsoft.Authorization/locks/write, an Owner-level right) and the Defender plan
// (Microsoft.Security/pricings/write, Security Admin) is opt-in and granted by the operator, not here.
var monitoringContributor = '749f88d5-cbae-40b8-bcfc-e573ddc772fa'

var roles = [
  keyVaultContributor
  reader
  securityAssessmentContributor
  monitoringContributor
]

resource assignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in roles: {
  name: guid(subscription().id, principalId, role)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]
