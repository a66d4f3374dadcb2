// The Event Grid system topic for a subscription's resource events. Azure allows one system topic
// per source, so an existing one can be reused (create = false): it must then have a
// system-assigned identity, which kvguard's dead-lettering uses.

param name string

@description('false: reuse the existing system topic of this name in this resource group.')
param create bool = true

param tags object = {}

resource created 'Microsoft.EventGrid/systemTopics@2022-06-15' = if (create) {
  name: name
  location: 'global'
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: subscription().id
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

resource reused 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = if (!create) {
  name: name
}

output name string = name
output principalId string = create ? created.identity.principalId : reused.identity.principalId
