// The Azure Bot resource that registers the Teams bot: approval cards, Universal Action invokes to
// /api/messages, proactive progress posts. Its Microsoft App ID is the bot's own user-assigned managed
// identity (no client secret exists), which holds no Azure role and no Graph permission.

@description('Bot handle (globally unique, 2-64 characters).')
param name string

@description('Name shown in Teams.')
param displayName string

@description('Tags for the bot.')
param tags object

@description('Resource id of the bot\'s user-assigned identity.')
param botIdentityId string

@description('Client id of the bot\'s user-assigned identity (the bot\'s Microsoft App ID).')
param botIdentityClientId string

@description('HTTPS endpoint Teams sends activities and invokes to: https://<app host>/api/messages.')
param messagingEndpoint string

@description('F0 is free for the Teams channel (a standard channel); S1 adds an SLA.')
@allowed([
  'F0'
  'S1'
])
param skuName string = 'F0'

resource bot 'Microsoft.BotService/botServices@2022-09-15' = {
  name: name
  location: 'global'
  tags: tags
  kind: 'azurebot'
  sku: {
    name: skuName
  }
  properties: {
    displayName: displayName
    endpoint: messagingEndpoint
    msaAppId: botIdentityClientId
    msaAppType: 'UserAssignedMSI'
    msaAppMSIResourceId: botIdentityId
    msaAppTenantId: tenant().tenantId
    // No Direct Line / Web Chat keys: Teams is the only channel.
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource teamsChannel 'Microsoft.BotService/botServices/channels@2022-09-15' = {
  parent: bot
  name: 'MsTeamsChannel'
  location: 'global'
  properties: {
    channelName: 'MsTeamsChannel'
    properties: {
      isEnabled: true
      enableCalling: false
    }
  }
}

output name string = bot.name
output messagingEndpoint string = bot.properties.endpoint
