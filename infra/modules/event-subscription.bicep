// Routes the subscription's events of the given operations to kvguard's on_vault_event function.
// Deployed only once the function exists (Event Grid validates the destination on creation).

param systemTopicName string
param name string

@description('Resource id of the kvguard function app (may live in another subscription).')
param functionAppId string

@description('The operations (data.operationName) this subscription passes. Event Grid takes at most 25 advanced-filter values per event subscription, so protect.bicep splits kvguard\'s operations over two.')
@minLength(1)
@maxLength(25)
param operations array

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
          values: operations
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
