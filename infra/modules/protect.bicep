// Everything kvguard needs in one protected subscription: its roles there, the Defender
// assessment metadata, the subscription's Event Grid system topic and, in the second phase, the
// event subscription that routes Key Vault events to the one central function app.
targetScope = 'subscription'

@description('Resource group for the system topic in this subscription.')
param resourceGroupName string

@description('Create that resource group (false when it already exists).')
param createResourceGroup bool

param location string
param tags object = {}

@description('Name of the system topic to create, unless existingSystemTopic names one to reuse.')
param systemTopicName string

@description('Name of kvguard\'s event subscription on the system topic (unique per kvguard environment); the second one, for the further surfaces, takes this name with the suffix -surfaces.')
param eventSubscriptionName string

@description('An existing system topic of this subscription to reuse: { resourceGroup: \'...\', name: \'...\' }; {} creates one.')
param existingSystemTopic object = {}

@description('Principal id of kvguard\'s identity (its roles here).')
param identityPrincipalId string

@description('GUID of kvguard\'s custom remediation role (defined once, in role-definition.bicep).')
param remediatorRoleId string

@description('Resource groups of this subscription to confine remediation rights to; empty: the whole subscription.')
param remediationResourceGroups array = []

param functionAppId string

@description('Subscription, resource group and name of kvguard\'s central storage account (dead letters).')
param centralSubscriptionId string
param centralResourceGroupName string
param storageAccountName string
param deadLetterContainerName string

@description('Resource id of kvguard\'s Log Analytics workspace: the system topic\'s diagnostic logs go there.')
param workspaceId string

@description('Create the event subscription (the function on_vault_event must already be deployed).')
param deployEventSubscription bool

var reuseTopic = !empty(existingSystemTopic)

// The operations kvguard handles (kvguard/deployment.py), split over two event subscriptions:
// Event Grid takes at most 25 advanced-filter values per event subscription.
var vaultOperations = [
  'Microsoft.KeyVault/vaults/write'
  'Microsoft.KeyVault/vaults/accessPolicies/write'
  'Microsoft.KeyVault/vaults/delete'
  'Microsoft.KeyVault/locations/deletedVaults/purge/action'
  // beside the vault: audit logging, locks, private endpoints, the Defender plan
  'Microsoft.Insights/diagnosticSettings/write'
  'Microsoft.Insights/diagnosticSettings/delete'
  'Microsoft.Authorization/locks/write'
  'Microsoft.Authorization/locks/delete'
  'Microsoft.KeyVault/vaults/privateEndpointConnections/write'
  'Microsoft.KeyVault/vaults/privateEndpointConnections/delete'
  'Microsoft.Security/pricings/write'
  // kvguard's own deployment (KV-SELF-02): its event subscriptions and the system topic they are
  // on, its app's settings, the app itself, stopping it and deleting it. Event subscriptions on a
  // system topic whose source is a vault (KV-EG-01) pass here too.
  'Microsoft.EventGrid/systemTopics/eventSubscriptions/write'
  'Microsoft.EventGrid/systemTopics/eventSubscriptions/delete'
  'Microsoft.EventGrid/systemTopics/delete'
  'Microsoft.Web/sites/config/write'
  'Microsoft.Web/sites/write'
  'Microsoft.Web/sites/stop/action'
  'Microsoft.Web/sites/delete'
  // Role assignments at any scope covering a vault, and custom role definitions (KV-RBAC-*).
  'Microsoft.Authorization/roleAssignments/write'
  'Microsoft.Authorization/roleAssignments/delete'
  'Microsoft.Authorization/roleDefinitions/write'
]
var surfaceOperations = [
  // Azure Policy (KV-POL-01, KV-POL-02)
  'Microsoft.Authorization/policyExemptions/write'
  'Microsoft.Authorization/policyExemptions/delete'
  'Microsoft.Authorization/policyAssignments/write'
  'Microsoft.Authorization/policyAssignments/delete'
  // deny settings (KV-DENY-01) and PIM eligibility (KV-PIM-01)
  'Microsoft.Authorization/denyAssignments/write'
  'Microsoft.Authorization/denyAssignments/delete'
  'Microsoft.Resources/deploymentStacks/write'
  'Microsoft.Authorization/roleEligibilityScheduleRequests/write'
  // network security perimeters (KV-NSP-01)
  'Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/write'
  'Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/delete'
  'Microsoft.Network/networkSecurityPerimeters/resourceAssociations/write'
  'Microsoft.Network/networkSecurityPerimeters/resourceAssociations/delete'
  // event subscriptions on a vault itself (KV-EG-01)
  'Microsoft.EventGrid/eventSubscriptions/write'
  'Microsoft.EventGrid/eventSubscriptions/delete'
  // Managed HSMs, protected vaults of kind hsm
  'Microsoft.KeyVault/managedHSMs/write'
  'Microsoft.KeyVault/managedHSMs/delete'
  'Microsoft.KeyVault/managedHSMs/privateEndpointConnections/write'
  'Microsoft.KeyVault/managedHSMs/privateEndpointConnections/delete'
  'Microsoft.KeyVault/locations/deletedManagedHSMs/purge/action'
  // keys through ARM (KV-KEY-01)
  'Microsoft.KeyVault/vaults/keys/write'
]
var topicResourceGroupName = reuseTopic ? existingSystemTopic.resourceGroup : resourceGroupName
var topicName = reuseTopic ? existingSystemTopic.name : systemTopicName

resource topicGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = if (createResourceGroup && !reuseTopic) {
  name: resourceGroupName
  location: location
  tags: tags
}

module roles 'rbac-subscription.bicep' = {
  name: 'kvguard-roles'
  params: {
    principalId: identityPrincipalId
    remediatorRoleId: remediatorRoleId
    resourceGroupNames: remediationResourceGroups
  }
}

module assessments 'assessments.bicep' = {
  name: 'kvguard-assessments'
}

module systemTopic 'system-topic.bicep' = {
  name: 'kvguard-system-topic'
  scope: resourceGroup(topicResourceGroupName)
  dependsOn: [
    topicGroup
  ]
  params: {
    name: topicName
    create: !reuseTopic
    tags: tags
  }
}

// The system topic's failed deliveries, logged in kvguard's workspace (own-diagnostics.bicep).
module topicDiagnostics 'own-diagnostics.bicep' = {
  name: 'kvguard-topic-diagnostics'
  scope: resourceGroup(topicResourceGroupName)
  params: {
    workspaceId: workspaceId
    systemTopicName: systemTopic.outputs.name
  }
}

module deadLetterAccess 'deadletter-access.bicep' = {
  name: 'kvguard-deadletter-${subscription().subscriptionId}'
  scope: resourceGroup(centralSubscriptionId, centralResourceGroupName)
  params: {
    storageAccountName: storageAccountName
    containerName: deadLetterContainerName
    principalId: systemTopic.outputs.principalId
  }
}

module eventSubscription 'event-subscription.bicep' = if (deployEventSubscription) {
  name: 'kvguard-event-subscription'
  scope: resourceGroup(topicResourceGroupName)
  dependsOn: [
    deadLetterAccess
  ]
  params: {
    systemTopicName: systemTopic.outputs.name
    name: eventSubscriptionName
    functionAppId: functionAppId
    deadLetterStorageAccountId: resourceId(centralSubscriptionId, centralResourceGroupName, 'Microsoft.Storage/storageAccounts', storageAccountName)
    deadLetterContainerName: deadLetterContainerName
    operations: vaultOperations
  }
}

module surfaceEventSubscription 'event-subscription.bicep' = if (deployEventSubscription) {
  name: 'kvguard-surface-event-subscription'
  scope: resourceGroup(topicResourceGroupName)
  dependsOn: [
    deadLetterAccess
  ]
  params: {
    systemTopicName: systemTopic.outputs.name
    name: '${eventSubscriptionName}-surfaces'
    functionAppId: functionAppId
    deadLetterStorageAccountId: resourceId(centralSubscriptionId, centralResourceGroupName, 'Microsoft.Storage/storageAccounts', storageAccountName)
    deadLetterContainerName: deadLetterContainerName
    operations: surfaceOperations
  }
}

output systemTopicName string = topicName
output systemTopicResourceGroup string = topicResourceGroupName
output systemTopicPrincipalId string = systemTopic.outputs.principalId
