// Routes the subscription's Key Vault control-plane events to kvguard's on_vault_event function.
// Deployed only once the function exists (Event Grid validates the destination on creation).

param systemTopicName string
param name string

@description('Resource id of the kvguard function app (may live in another subscription).')
param functionAppId string

param deadLetterStorageAccountId string
param deadLetterContainerName string

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource vaultEvents 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: name
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/on_vault_event'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Resources.ResourceWriteSuccess'
        'Microsoft.Resources.ResourceWriteFailure'
        'Microsoft.Resources.ResourceDeleteSuccess'
        'Microsoft.Resources.ResourceDeleteFailure'
        'Microsoft.Resources.ResourceActionSuccess'
        'Microsoft.Resources.ResourceActionFailure'
      ]
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.operationName'
          values: [
            'Microsoft.KeyVault/vaults/write'
            'Microsoft.KeyVault/vaults/accessPolicies/write'
            'Microsoft.KeyVault/vaults/delete'
            'Microsoft.KeyVault/locations/deletedVaults/purge/action'
            // Role assignments at any scope covering a vault, and custom role definitions (KV-RBAC-*).
            'Microsoft.Authorization/roleAssignments/write'
            'Microsoft.Authorization/roleAssignments/delete'
            'Microsoft.Authorization/roleDefinitions/write'
            // beside the vault: audit logging, locks, private endpoints, the Defender plan
            'Microsoft.Insights/diagnosticSettings/write'
            'Microsoft.Insights/diagnosticSettings/delete'
            'Microsoft.Authorization/locks/write'
            'Microsoft.Authorization/locks/delete'
            'Microsoft.KeyVault/vaults/privateEndpointConnections/write'
            'Microsoft.KeyVault/vaults/privateEndpointConnections/delete'
            'Microsoft.Security/pricings/write'
            // kvguard's own deployment (KV-SELF-02): its event subscription and the system topic
            // it is on, its app's settings, the app itself, stopping it and deleting it.
            'Microsoft.EventGrid/systemTopics/eventSubscriptions/write'
            'Microsoft.EventGrid/systemTopics/eventSubscriptions/delete'
            'Microsoft.EventGrid/systemTopics/delete'
            'Microsoft.Web/sites/config/write'
            'Microsoft.Web/sites/write'
            'Microsoft.Web/sites/stop/action'
            'Microsoft.Web/sites/delete'
            // Network Security Perimeters over a vault (KV-NSP-01) and event subscriptions on a
            // vault's events (KV-EG-01); the systemTopics/eventSubscriptions operations are above.
            'Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/write'
            'Microsoft.Network/networkSecurityPerimeters/profiles/accessRules/delete'
            'Microsoft.Network/networkSecurityPerimeters/resourceAssociations/write'
            'Microsoft.Network/networkSecurityPerimeters/resourceAssociations/delete'
            'Microsoft.EventGrid/eventSubscriptions/write'
            'Microsoft.EventGrid/eventSubscriptions/delete'
          ]
        }
        // No filter on the caller: kvguard's own writes come back too, so that a write made with its
        // identity that kvguard did not plan (no ledger entry) is seen (KV-SELF-01).
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output id string = vaultEvents.id
