// Governed emergency access for Microsoft Entra PIM: everything `azd up` deploys (docs/deploy.md).
//
// One resource group with the Flex Consumption Function App (Python 3.11), its two user-assigned identities
// (the app's, which the admin script makes able to assign roles, and the bot's, which can only talk to Teams),
// a storage account with shared keys off, Log Analytics + Application Insights with local auth off, a Key Vault
// in RBAC mode for the ITSM secrets, the Azure Bot with its Teams channel, optionally the Durable Task
// Scheduler, and the role assignments between them. No output is a secret, key or connection string.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; with the subscription and the region it seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region of every regional resource; Flex Consumption must be offered there (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group name; empty for rg-<environmentName>.')
param resourceGroupName string = ''

// --- What the app talks to (shared/settings.py) ----------------------------------------------------------

@description('Entra tenant whose PIM roles the app manages; the subscription\'s tenant by default (the bot\'s identity lives there too).')
param entraTenantId string = tenant().tenantId

@description('Microsoft Graph base URL with its version (national clouds differ).')
param graphBaseUrl string = 'https://graph.microsoft.com/v1.0'

@description('Exchange Online admin API base URL (the workload-side probe).')
param exchangeAdminBaseUrl string = 'https://outlook.office365.com'

@description('Bot Framework OpenID metadata: where the signing keys of Teams\' invokes are published.')
param botOpenIdMetadataUrl string = 'https://login.botframework.com/v1/.well-known/openidconfiguration'

@description('Bot Connector service URL for proactive posts to Teams.')
param botConnectorServiceUrl string = 'https://smba.trafficmanager.net/teams'

@description('ITSM systems the policy (policy/policy.toml) enables. Must match it: the app refuses to start when an enabled system lacks its settings.')
@allowed([
  'servicenow'
  'jira'
  'ivanti'
  'xurrent'
])
param itsmSystems array = [
  'servicenow'
  'jira'
]

@description('Roster provider the policy uses: entra_group needs nothing more; pagerduty and servicenow_rota need their API credentials.')
@allowed([
  'entra_group'
  'pagerduty'
  'servicenow_rota'
])
param rosterProvider string = 'entra_group'

@description('ServiceNow instance URL, e.g. https://contoso.service-now.com (when ServiceNow is enabled or is the roster provider).')
param servicenowBaseUrl string = ''

@description('ServiceNow integration user (Basic auth). Its password is the Key Vault secret servicenow-api-password.')
param servicenowApiUser string = ''

@description('Jira site URL, e.g. https://contoso.atlassian.net (when Jira is enabled).')
param jiraBaseUrl string = ''

@description('Atlassian account email the app calls Jira as. Its API token is the Key Vault secret jira-api-token.')
param jiraApiEmail string = ''

@description('Ivanti Neurons for ITSM tenant URL (when Ivanti is enabled).')
param ivantiBaseUrl string = ''

@description('Xurrent API URL (when Xurrent is enabled).')
param xurrentBaseUrl string = ''

@description('PagerDuty REST API URL (when PagerDuty is the roster provider). Its token is the Key Vault secret pagerduty-api-token.')
param pagerdutyBaseUrl string = 'https://api.pagerduty.com'

@description('Systems whose previous webhook secret (<system>-webhook-secret-previous) is still accepted while a rotation is in progress.')
@allowed([
  'servicenow'
  'jira'
  'ivanti'
])
param webhookSecretsInRotation array = []

@description('Policy file, relative to the app root.')
param policyPath string = 'policy/policy.toml'

@description('NCRONTAB schedule (six fields, seconds first) of the expiry sweep.')
param sweepSchedule string = '0 */5 * * * *'

// --- Hosting -----------------------------------------------------------------------------------------------

@description('Durable Functions backend. AzureStorage: the task hub lives in the app\'s storage account (host.json as shipped). DurableTaskScheduler: a managed scheduler, which app settings select over host.json (docs/deploy.md).')
@allowed([
  'AzureStorage'
  'DurableTaskScheduler'
])
param durableBackend string = 'AzureStorage'

@description('Durable Task Scheduler SKU (DurableTaskScheduler backend only).')
@allowed([
  'Consumption'
  'Dedicated'
])
param durableTaskSchedulerSku string = 'Consumption'

@description('Task hub name; the same as host.json\'s durableTask.hubName.')
param taskHubName string = 'PimEmergencyAccess'

@description('Always-ready instances for the durable group, so approvals and proof polling never wait on a cold start.')
@minValue(0)
@maxValue(10)
param durableAlwaysReadyInstances int = 1

@description('Upper bound of Function App instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Storage redundancy. The audit ledger lives in this account, so every choice is geo-redundant.')
@allowed([
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_GRS'

@description('Days Log Analytics keeps telemetry.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 90

// --- Monitoring ----------------------------------------------------------------------------------------------

@description('Comma-separated email addresses the alert rules notify (the IAM on-call mailbox); empty: add receivers to the action group yourself.')
param alertEmails string = ''

@description('Refused signatures and tokens in 15 minutes that raise the spike alert.')
@minValue(1)
param signatureRejectionThreshold int = 10

@description('Azure Bot SKU.')
@allowed([
  'F0'
  'S1'
])
param botSkuName string = 'F0'

@description('Object id of whoever writes the ITSM secrets into the vault (azd passes the signed-in user); empty for none.')
param secretsOfficerPrincipalId string = ''

@description('Kind of principal secretsOfficerPrincipalId names.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param secretsOfficerPrincipalType string = 'User'

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  workload: 'pim-emergency-access'
}
var functionAppName = '${abbrs.webSitesFunctions}pim-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var useDurableTaskScheduler = durableBackend == 'DurableTaskScheduler'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// The identity that will hold the Graph permissions and Privileged Role Administrator (admin script): Tier-0.
module appIdentity 'modules/identity.bicep' = {
  name: 'app-identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}pim-app-${resourceToken}'
    location: location
    tags: tags
  }
}

// The bot's own identity: Bot Connector tokens only, no Azure role, no Graph permission.
module botIdentity 'modules/identity.bicep' = {
  name: 'bot-identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}pim-bot-${resourceToken}'
    location: location
    tags: tags
  }
}

// The alert rules' identity: Log Analytics Reader on the workspace, nothing else.
module alertsIdentity 'modules/identity.bicep' = {
  name: 'alerts-identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}pim-alerts-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
    retentionInDays: logRetentionInDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    deploymentContainerName: deploymentContainerName
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'key-vault'
  scope: rg
  params: {
    name: '${abbrs.keyVaultVaults}${resourceToken}'
    location: location
    tags: tags
    logAnalyticsWorkspaceId: monitoring.outputs.logAnalyticsId
  }
}

module durableTaskScheduler 'modules/durable-task-scheduler.bicep' = if (useDurableTaskScheduler) {
  name: 'durable-task-scheduler'
  scope: rg
  params: {
    name: '${abbrs.durableTaskSchedulers}${resourceToken}'
    location: location
    tags: tags
    taskHubName: taskHubName
    skuName: durableTaskSchedulerSku
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    logAnalyticsName: monitoring.outputs.logAnalyticsName
    appIdentityPrincipalId: appIdentity.outputs.principalId
    alertsIdentityPrincipalId: alertsIdentity.outputs.principalId
    durableTaskSchedulerName: useDurableTaskScheduler ? durableTaskScheduler.outputs.name : ''
    secretsOfficerPrincipalId: secretsOfficerPrincipalId
    secretsOfficerPrincipalType: secretsOfficerPrincipalType
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  // The roles come first, so the host's first start finds its storage and Key Vault access in place.
  dependsOn: [
    rbac
  ]
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    appIdentityId: appIdentity.outputs.id
    appIdentityClientId: appIdentity.outputs.clientId
    botIdentityId: botIdentity.outputs.id
    botIdentityClientId: botIdentity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultUri: keyVault.outputs.uri
    durableAlwaysReadyInstances: durableAlwaysReadyInstances
    maximumInstanceCount: maximumInstanceCount
    entraTenantId: entraTenantId
    graphBaseUrl: graphBaseUrl
    exchangeAdminBaseUrl: exchangeAdminBaseUrl
    botOpenIdMetadataUrl: botOpenIdMetadataUrl
    botConnectorServiceUrl: botConnectorServiceUrl
    policyPath: policyPath
    sweepSchedule: sweepSchedule
    itsmSystems: itsmSystems
    rosterProvider: rosterProvider
    webhookSecretsInRotation: webhookSecretsInRotation
    servicenowBaseUrl: servicenowBaseUrl
    servicenowApiUser: servicenowApiUser
    jiraBaseUrl: jiraBaseUrl
    jiraApiEmail: jiraApiEmail
    ivantiBaseUrl: ivantiBaseUrl
    xurrentBaseUrl: xurrentBaseUrl
    pagerdutyBaseUrl: pagerdutyBaseUrl
    durableBackend: durableBackend
    durableTaskSchedulerEndpoint: useDurableTaskScheduler ? durableTaskScheduler.outputs.endpoint : ''
    taskHubName: useDurableTaskScheduler ? durableTaskScheduler.outputs.taskHubName : ''
  }
}

module bot 'modules/bot.bicep' = {
  name: 'bot'
  scope: rg
  params: {
    name: '${abbrs.botServicesBots}pim-${resourceToken}'
    displayName: 'Emergency access (PIM)'
    tags: tags
    botIdentityId: botIdentity.outputs.id
    botIdentityClientId: botIdentity.outputs.clientId
    messagingEndpoint: 'https://${functionApp.outputs.defaultHostName}/api/messages'
    skuName: botSkuName
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsId: monitoring.outputs.logAnalyticsId
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  // A rule's first evaluation runs under its identity: the role comes first.
  dependsOn: [
    rbac
  ]
  params: {
    namePrefix: resourceToken
    location: location
    tags: tags
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    alertsIdentityId: alertsIdentity.outputs.id
    alertEmails: alertEmails
    signatureRejectionThreshold: signatureRejectionThreshold
  }
}

// azd writes these into .azure/<env>/.env; the admin script and the Teams app package read them.
// Names, ids and endpoints only.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = functionApp.outputs.name
output SERVICE_API_URI string = 'https://${functionApp.outputs.defaultHostName}'
output APP_IDENTITY_NAME string = appIdentity.outputs.name
output APP_IDENTITY_CLIENT_ID string = appIdentity.outputs.clientId
output APP_IDENTITY_PRINCIPAL_ID string = appIdentity.outputs.principalId
output BOT_APP_ID string = botIdentity.outputs.clientId
output BOT_NAME string = bot.outputs.name
output BOT_MESSAGING_ENDPOINT string = bot.outputs.messagingEndpoint
output KEY_VAULT_NAME string = keyVault.outputs.name
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output LOG_ANALYTICS_WORKSPACE_NAME string = monitoring.outputs.logAnalyticsName
output DURABLE_BACKEND string = durableBackend
output DURABLE_TASK_SCHEDULER_ENDPOINT string = useDurableTaskScheduler ? durableTaskScheduler.outputs.endpoint : ''
output WORKBOOK_NAME string = workbook.outputs.name
output ALERTS_ACTION_GROUP_NAME string = alerts.outputs.actionGroupName
