// kvguard's remediation role, defined once for every protected subscription (role names are unique
// per tenant). It holds only the actions kvguard's handlers and reads declare, in place of Key Vault
// Contributor (Microsoft.KeyVault/*). It holds no data actions: no secret, key or certificate can be
// read with it. But accessPolicies/write can add an access policy as well as remove one, so whoever
// runs code as kvguard's identity can still grant data access on an access-policy vault: the ledger
// of own writes (KV-SELF-01) is the control for that.
targetScope = 'subscription'

param environmentName string

@description('Every subscription kvguard protects: where the role may be assigned.')
param subscriptionIds array

var actions = [
  // VaultGateway.get / list_vaults: read the vault (or Managed HSM) before judging and before every write.
  'Microsoft.KeyVault/vaults/read'
  'Microsoft.KeyVault/managedHSMs/read'
  // restore_network, restore_settings, enable_purge_protection: PATCH of vault properties.
  'Microsoft.KeyVault/vaults/write'
  // revert_access_policy: a targeted accessPolicies/remove.
  'Microsoft.KeyVault/vaults/accessPolicies/write'
  // reject_private_endpoint: a private endpoint connection's state set to Rejected.
  'Microsoft.KeyVault/vaults/privateEndpointConnections/write'
  // restore_diagnostic_setting: the diagnostic settings of vaults only, not of every resource type
  // of the subscription. Restoring locks (locks/write, Owner-level) and the Defender plan
  // (pricings/write, Security Admin) is opt-in: the operator grants those.
  'Microsoft.KeyVault/vaults/providers/Microsoft.Insights/diagnosticSettings/write'
  // The further surfaces: reads only (kvguard/adapters/resources.py SURFACE_READ_PERMISSIONS). The
  // handlers that write them are opt-in: the operator grants their rights (README, "Opt-in rights").
  'Microsoft.Authorization/policyExemptions/read'
  'Microsoft.Authorization/policyAssignments/read'
  'Microsoft.Authorization/policyDefinitions/read'
  'Microsoft.Authorization/policySetDefinitions/read'
  'Microsoft.Authorization/denyAssignments/read'
  'Microsoft.Resources/deploymentStacks/read'
  'Microsoft.Authorization/roleEligibilityScheduleRequests/read'
  'Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/read'
  'Microsoft.Network/networkSecurityPerimeters/resourceAssociations/read'
  'Microsoft.EventGrid/eventSubscriptions/read'
  'Microsoft.EventGrid/systemTopics/read'
  'Microsoft.KeyVault/managedHSMs/privateEndpointConnections/read'
  'Microsoft.KeyVault/vaults/keys/read'
  'Microsoft.KeyVault/vaults/networkSecurityPerimeterConfigurations/read'
]

var protectedScopes = [for id in subscriptionIds: '/subscriptions/${id}']

resource remediator 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, environmentName, 'kvguard-remediator')
  properties: {
    roleName: 'kvguard remediator (${environmentName})'
    description: 'kvguard: read vaults and revert access policies, network rules and vault settings. No data actions.'
    type: 'CustomRole'
    permissions: [
      {
        actions: actions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: union([
      subscription().id
    ], protectedScopes)
  }
}

output roleId string = remediator.name
