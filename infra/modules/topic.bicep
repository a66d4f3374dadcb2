// The Event Grid custom topic where kvguard publishes its detections (CloudEvents 1.0,
// type kvguard.detection) for SIEM, SOAR and Logic Apps. Publishers authenticate with Entra ID only.

param name string
param location string
param tags object = {}

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  // checkov:skip=CKV_AZURE_193: subscribers (SIEM, SOAR, Logic Apps) are set up outside this template; local auth is disabled, so publishing needs Entra ID and the EventGrid Data Sender role
  name: name
  location: location
  tags: tags
  // Lets subscribers deliver with the topic's identity (deliveryWithResourceIdentity), e.g. to Event Hubs.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

output id string = topic.id
output name string = topic.name
output endpoint string = topic.properties.endpoint
