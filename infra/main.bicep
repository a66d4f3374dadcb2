// kvguard: real-time detection and remediation of Azure Key Vault tampering.
//
// Deploys, at subscription scope: a resource group with kvguard's identity, storage, monitoring,
// the detection topic and the Functions app (Flex Consumption); then, in every protected
// subscription, the roles, the Defender assessment metadata and the Event Grid system topic.
//
// Two phases: Event Grid validates an event subscription's function on creation, so the event
// subscriptions are created only with deployEventSubscription = true, after the code is deployed
// (azd's postdeploy hook, infra/hooks/postdeploy.sh, re-runs this deployment with it).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd environment name); used in resource names and tags.')
param environmentName string

@minLength(1)
@description('Azure region for the resources (the system topics are global).')
param location string

@description('Object id of the person or pipeline deploying; given read-write access to the dead letters (redrive). Empty: none.')
param principalId string = ''

@description('Type of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'

@description('Name of the resource group to create (empty: rg-<environmentName>).')
param resourceGroupName string = ''

@description('kvguard mode until a policy file or a vault tag says otherwise: observe, alert or remediate.')
@allowed([
  'observe'
  'alert'
  'remediate'
])
param mode string = 'alert'

@description('Subscriptions to protect. Empty: only the subscription of this deployment.')
param protectedSubscriptionIds array = []

@description('Existing Event Grid system topics to reuse, by subscription id: { "<subscription id>": { "resourceGroup": "...", "name": "..." } }. Azure allows one system topic per subscription.')
param existingSystemTopics object = {}

@description('Create the event subscriptions to the function on_vault_event (second phase, once the code is deployed).')
param deployEventSubscription bool = false

@description('Resource groups to confine kvguard\'s remediation rights to, per protected subscription: {"<subscription id>": ["rg-a", "rg-b"]}; a subscription not named gets them at subscription scope.')
param remediationResourceGroups object = {}

@description('Path of a policy file inside the deployed package, e.g. policy.yaml (empty: defaults).')
param policyFile string = ''

@description('NCRONTAB schedule (six fields, UTC) of the reconcile function: seeds missing baselines and catches changes whose events never arrived.')
param reconcileSchedule string = '0 0 * * * *'

@description('Storage replication for kvguard\'s state, package and dead letters.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSku string = 'Standard_LRS'

@description('Send every finding and action to the Log Analytics table KvguardFindings_CL (a data collection endpoint and rule, for Sentinel) and deploy the kvguard workbook.')
param deployFindingsLog bool = false

@description('With deployFindingsLog: a Microsoft Sentinel scheduled analytics rule on the findings table (infra/sentinel-rule.kql), one incident per high or critical finding; turns Sentinel on for kvguard\'s workspace.')
param deploySentinelRule bool = false

@description('Resource id of the Log Analytics workspace that holds the vaults\' AuditEvent logs (empty: none). kvguard gets Log Analytics Reader there and adds to each grant finding what the granted principal did in the vault (blast radius).')
param auditWorkspaceResourceId string = ''

var token = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  application: 'kvguard'
}
var subscriptionIds = empty(protectedSubscriptionIds) ? [
  subscription().subscriptionId
] : protectedSubscriptionIds
var groupName = empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
var deploymentContainerName = 'app-package'
// kvguard's own event subscriptions in each protected subscription (as protect.bicep names them):
// the vault's operations, and the further surfaces (Event Grid's 25 filter values split them).
var vaultEventSubscriptionIds = [for subscriptionId in subscriptionIds: '/subscriptions/${subscriptionId}/resourceGroups/${contains(existingSystemTopics, subscriptionId) ? existingSystemTopics[subscriptionId].resourceGroup : groupName}/providers/Microsoft.EventGrid/systemTopics/${contains(existingSystemTopics, subscriptionId) ? existingSystemTopics[subscriptionId].name : 'evgst-kvguard-${token}'}/eventSubscriptions/kvguard-${environmentName}']
var surfaceEventSubscriptionIds = [for subscriptionId in subscriptionIds: '/subscriptions/${subscriptionId}/resourceGroups/${contains(existingSystemTopics, subscriptionId) ? existingSystemTopics[subscriptionId].resourceGroup : groupName}/providers/Microsoft.EventGrid/systemTopics/${contains(existingSystemTopics, subscriptionId) ? existingSystemTopics[subscriptionId].name : 'evgst-kvguard-${token}'}/eventSubscriptions/kvguard-${environmentName}-surfaces']
var ownEventSubscriptionIds = concat(vaultEventSubscriptionIds, surfaceEventSubscriptionIds)
var deadLetterContainerName = 'deadletters'

resource group 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: groupName
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'kvguard-identity'
  scope: group
  params: {
    name: 'id-kvguard-${token}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'kvguard-storage'
  scope: group
  params: {
    name: 'stkvg${token}'
    location: location
    tags: tags
    skuName: storageSku
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'kvguard-monitoring'
  scope: group
  params: {
    logAnalyticsName: 'log-kvguard-${token}'
    applicationInsightsName: 'appi-kvguard-${token}'
    location: location
    tags: tags
  }
}

module topic 'modules/topic.bicep' = {
  name: 'kvguard-topic'
  scope: group
  params: {
    name: 'evgt-kvguard-${token}'
    location: location
    tags: tags
  }
}

module app 'modules/functionapp.bicep' = {
  name: 'kvguard-app'
  scope: group
  dependsOn: [
    rbac
  ]
  params: {
    name: 'func-kvguard-${token}'
    planName: 'plan-kvguard-${token}'
    location: location
    tags: union(tags, {
      'azd-service-name': 'api'
    })
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    identityPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    storageBlobEndpoint: storage.outputs.blobEndpoint
    storageTableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    topicEndpoint: topic.outputs.endpoint
    mode: mode
    subscriptionIds: subscriptionIds
    ownEventSubscriptionIds: deployEventSubscription ? ownEventSubscriptionIds : []
    policyFile: policyFile
    reconcileSchedule: reconcileSchedule
    findingsLogEndpoint: deployFindingsLog ? findingsLog.outputs.endpoint : ''
    findingsLogRuleId: deployFindingsLog ? findingsLog.outputs.ruleId : ''
    auditWorkspaceId: empty(auditWorkspaceResourceId) ? '' : auditWorkspaceAccess.outputs.customerId
  }
}

module auditWorkspaceAccess 'modules/audit-workspace-access.bicep' = if (!empty(auditWorkspaceResourceId)) {
  name: 'kvguard-audit-workspace-access'
  scope: resourceGroup(split(auditWorkspaceResourceId, '/')[2], split(auditWorkspaceResourceId, '/')[4])
  params: {
    principalId: identity.outputs.principalId
    workspaceName: last(split(auditWorkspaceResourceId, '/'))
  }
}

module findingsLog 'modules/findings-log.bicep' = if (deployFindingsLog) {
  name: 'kvguard-findings-log'
  scope: group
  params: {
    principalId: identity.outputs.principalId
    workspaceName: monitoring.outputs.logAnalyticsName
    dataCollectionEndpointName: 'dce-kvguard-${token}'
    dataCollectionRuleName: 'dcr-kvguard-${token}'
    location: location
    tags: tags
  }
}

module sentinelRule 'modules/sentinel-rule.bicep' = if (deployFindingsLog && deploySentinelRule) {
  name: 'kvguard-sentinel-rule'
  scope: group
  dependsOn: [
    findingsLog
  ]
  params: {
    workspaceName: monitoring.outputs.logAnalyticsName
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'kvguard-rbac'
  scope: group
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    topicName: topic.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

module operatorAccess 'modules/deadletter-access.bicep' = if (!empty(principalId)) {
  name: 'kvguard-operator-access'
  scope: group
  params: {
    storageAccountName: storage.outputs.name
    containerName: storage.outputs.deadLetterContainerName
    principalId: principalId
    principalType: principalType
  }
}

module remediatorRole 'modules/role-definition.bicep' = {
  name: 'kvguard-remediator-role'
  params: {
    environmentName: environmentName
    subscriptionIds: subscriptionIds
  }
}

module protect 'modules/protect.bicep' = [for subscriptionId in subscriptionIds: {
  name: 'kvguard-protect-${subscriptionId}'
  scope: subscription(subscriptionId)
  params: {
    resourceGroupName: group.name
    createResourceGroup: subscriptionId != subscription().subscriptionId
    location: location
    tags: tags
    systemTopicName: 'evgst-kvguard-${token}'
    eventSubscriptionName: 'kvguard-${environmentName}'
    existingSystemTopic: contains(existingSystemTopics, subscriptionId) ? existingSystemTopics[subscriptionId] : {}
    identityPrincipalId: identity.outputs.principalId
    remediatorRoleId: remediatorRole.outputs.roleId
    remediationResourceGroups: contains(remediationResourceGroups, subscriptionId) ? remediationResourceGroups[subscriptionId] : []
    functionAppId: app.outputs.id
    centralSubscriptionId: subscription().subscriptionId
    centralResourceGroupName: group.name
    storageAccountName: storage.outputs.name
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    workspaceId: monitoring.outputs.logAnalyticsId
    deployEventSubscription: deployEventSubscription
  }
}]

// Reads, writes and deletes in kvguard's storage and its app's logs, in its workspace.
module ownDiagnostics 'modules/own-diagnostics.bicep' = {
  name: 'kvguard-own-diagnostics'
  scope: group
  params: {
    workspaceId: monitoring.outputs.logAnalyticsId
    storageAccountName: storage.outputs.name
    functionAppName: app.outputs.name
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = group.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output KVGUARD_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output KVGUARD_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output KVGUARD_EVENTGRID_TOPIC_ENDPOINT string = topic.outputs.endpoint
output KVGUARD_DEAD_LETTER_CONTAINER string = storage.outputs.deadLetterContainerName
output KVGUARD_SUBSCRIPTION_IDS string = join(subscriptionIds, ',')
output KVGUARD_EVENT_SUBSCRIPTION_DEPLOYED bool = deployEventSubscription
