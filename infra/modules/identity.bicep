// One user-assigned managed identity. main.bicep creates two: the app's (it will hold the Graph application
// permissions and Privileged Role Administrator, granted by the admin script) and the bot's (it only signs
// the Teams bot's Bot Connector calls, so a leak of the bot's configuration cannot assign roles).

@description('Name of the user-assigned managed identity.')
param name string

@description('Region of the identity.')
param location string

@description('Tags for the identity.')
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
