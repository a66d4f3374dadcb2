// The kvguard Functions app on the Flex Consumption plan (Linux, Python 3.11). Everything it
// touches - storage, Application Insights, the detection topic, ARM - it reaches with its
// user-assigned identity; basic (FTP and SCM) publishing credentials are switched off.

param name string
param planName string
param location string
param tags object = {}

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity (DefaultAzureCredential picks it through AZURE_CLIENT_ID).')
param identityClientId string

@description('Principal (object) id of that identity: its writes are `self` when kvguard planned them (ledger).')
param identityPrincipalId string

param storageAccountName string
param storageBlobEndpoint string
param storageTableEndpoint string
param deploymentContainerName string

@description('Blob container where Event Grid dead-letters events: part of the delivery KV-SELF-02 judges.')
param deadLetterContainerName string

param applicationInsightsConnectionString string

@description('Endpoint of the Event Grid custom topic for published detections.')
param topicEndpoint string

@description('kvguard mode when no policy file says otherwise.')
@allowed([
  'observe'
  'alert'
  'remediate'
])
param mode string = 'alert'

@description('Subscriptions whose vaults kvguard watches and reconciles.')
param subscriptionIds array

@description('Resource ids of kvguard\'s own event subscriptions, watched with the app itself (KV-SELF-02).')
param ownEventSubscriptionIds array = []

@description('Path of a policy file inside the deployed package (empty: defaults and app settings only).')
param policyFile string = ''

@description('NCRONTAB schedule of the reconcile timer (read through %KVGUARD_RECONCILE_SCHEDULE%).')
param reconcileSchedule string = '0 0 * * * *'

@description('Logs Ingestion endpoint of the findings table\'s data collection endpoint (empty: no findings table).')
param findingsLogEndpoint string = ''

@description('Immutable id of the findings table\'s data collection rule.')
param findingsLogRuleId string = ''

@description('Workspace (customer) id of the Log Analytics workspace with the vaults\' AuditEvent logs (empty: no blast radius).')
param auditWorkspaceId string = ''

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

var baseSettings = [
  {
    name: 'AzureWebJobsStorage__accountName'
    value: storageAccountName
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: storageTableEndpoint
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: applicationInsightsConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'Authorization=AAD;ClientId=${identityClientId}'
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
  {
    name: 'KVGUARD_MODE'
    value: mode
  }
  {
    name: 'KVGUARD_OWN_PRINCIPAL_IDS'
    value: identityPrincipalId
  }
  {
    name: 'KVGUARD_STATE_BACKEND'
    value: 'tables'
  }
  {
    name: 'KVGUARD_EVENTGRID_TOPIC_ENDPOINT'
    value: topicEndpoint
  }
  {
    name: 'KVGUARD_DEFENDER'
    value: 'true'
  }
  {
    name: 'KVGUARD_SUBSCRIPTION_IDS'
    value: join(subscriptionIds, ',')
  }
  {
    name: 'KVGUARD_RECONCILE_SCHEDULE'
    value: reconcileSchedule
  }
  {
    name: 'KVGUARD_OWN_RESOURCE_IDS'
    // The function app and the dead-letter container name where the event subscriptions deliver
    // (KV-SELF-02 judges each subscription's destination and dead-letter destination against them).
    value: join(concat(ownEventSubscriptionIds, [
      resourceId('Microsoft.Web/sites', name)
      resourceId('Microsoft.Storage/storageAccounts/blobServices/containers', storageAccountName, 'default', deadLetterContainerName)
    ]), ',')
  }
]

// The findings table (Logs Ingestion API) only when main.bicep deploys it.
var findingsLogSettings = empty(findingsLogEndpoint) ? [] : [
  {
    name: 'KVGUARD_INGESTION_ENDPOINT'
    value: findingsLogEndpoint
  }
  {
    name: 'KVGUARD_INGESTION_RULE_ID'
    value: findingsLogRuleId
  }
]

// The blast radius of grant findings only when an audit workspace is given.
var auditWorkspaceSettings = empty(auditWorkspaceId) ? [] : [
  {
    name: 'KVGUARD_AUDIT_WORKSPACE_ID'
    value: auditWorkspaceId
  }
]

var policySettings = empty(policyFile) ? [] : [
  {
    name: 'KVGUARD_POLICY_FILE'
    value: policyFile
  }
]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption exists only in some regions; Event Grid retries deliveries (30 attempts over 24 hours) and dead-letters the rest
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid delivers to the function over the public endpoint; the Event Grid trigger requires its system key
  // checkov:skip=CKV_AZURE_17: Event Grid cannot present client certificates
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales by instances on demand (maximumInstanceCount); Event Grid retries while an instance starts
  // checkov:skip=CKV_AZURE_213: Flex Consumption does not support the App Service health check; the app exposes an HTTP health function instead
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: concat(baseSettings, policySettings, findingsLogSettings, auditWorkspaceSettings)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = functionApp.id
output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
