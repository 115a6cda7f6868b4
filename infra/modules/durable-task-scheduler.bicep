// Durable Task Scheduler: the managed Durable Functions backend, deployed only when main.bicep's
// durableBackend is 'DurableTaskScheduler'. The app reaches it with its managed identity (Durable Task Data
// Contributor on the scheduler, rbac.bicep); there is no key. host.json must name it as the storage provider
// (docs/deploy.md, "Durable Functions backend").

@description('Name of the scheduler (letters, digits and hyphens, 3-64 characters).')
param name string

@description('Region of the scheduler.')
param location string

@description('Tags for the scheduler.')
param tags object

@description('Task hub name; host.json\'s durableTask.hubName must name the same hub.')
param taskHubName string

@description('Consumption (pay per action) suits this low-volume app; Dedicated for predictable throughput.')
@allowed([
  'Consumption'
  'Dedicated'
])
param skuName string = 'Consumption'

@description('Addresses allowed to reach the scheduler. A Flex Consumption app without virtual network integration has no fixed outbound addresses, so the default admits all and relies on Entra ID + RBAC (an empty list denies every caller).')
param ipAllowlist array = [
  '0.0.0.0/0'
]

var skus = {
  Consumption: {
    name: 'Consumption'
  }
  Dedicated: {
    name: 'Dedicated'
    capacity: 1
  }
}

resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    ipAllowlist: ipAllowlist
    sku: skus[skuName]
  }
}

resource taskHub 'Microsoft.DurableTask/schedulers/taskHubs@2025-11-01' = {
  parent: scheduler
  name: taskHubName
}

output name string = scheduler.name
output endpoint string = scheduler.properties.endpoint
output taskHubName string = taskHub.name
