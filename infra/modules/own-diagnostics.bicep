// Diagnostic settings on kvguard's own resources, sent to its Log Analytics workspace: who read,
// wrote or deleted in its storage (state, ledger, dead letters, deployment package), what its
// function app logged, and which deliveries its system topic failed. Tampering with kvguard itself
// leaves a trail beside the Activity Log. Deployed once beside the app (storage and app) and once
// per protected subscription beside its system topic; a name left empty deploys nothing for it.

@description('Resource id of the Log Analytics workspace the logs go to.')
param workspaceId string

@description('kvguard\'s storage account (empty: not in this resource group).')
param storageAccountName string = ''

@description('kvguard\'s function app (empty: not in this resource group).')
param functionAppName string = ''

@description('The system topic carrying kvguard\'s event subscription (empty: not in this resource group).')
param systemTopicName string = ''

param settingName string = 'kvguard-own-audit'

var allLogs = [
  {
    categoryGroup: 'allLogs'
    enabled: true
  }
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = if (!empty(storageAccountName)) {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = if (!empty(storageAccountName)) {
  parent: storage
  name: 'default'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = if (!empty(storageAccountName)) {
  parent: storage
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = if (!empty(storageAccountName)) {
  parent: storage
  name: 'default'
}

resource site 'Microsoft.Web/sites@2023-12-01' existing = if (!empty(functionAppName)) {
  name: functionAppName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = if (!empty(systemTopicName)) {
  name: systemTopicName
}

// The account itself has metrics only; its reads, writes and deletes are logged per service.
resource storageMetrics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(storageAccountName)) {
  name: settingName
  scope: storage
  properties: {
    workspaceId: workspaceId
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource blobLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(storageAccountName)) {
  name: settingName
  scope: blobService
  properties: {
    workspaceId: workspaceId
    logs: allLogs
  }
}

resource tableLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(storageAccountName)) {
  name: settingName
  scope: tableService
  properties: {
    workspaceId: workspaceId
    logs: allLogs
  }
}

resource queueLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(storageAccountName)) {
  name: settingName
  scope: queueService
  properties: {
    workspaceId: workspaceId
    logs: allLogs
  }
}

resource appLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(functionAppName)) {
  name: settingName
  scope: site
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
  }
}

resource topicLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(systemTopicName)) {
  name: settingName
  scope: systemTopic
  properties: {
    workspaceId: workspaceId
    logs: allLogs
  }
}
