// The Flex Consumption Function App (Python 3.11) and every app setting it runs with.
//
// The app runs under two user-assigned identities: the app's (AZURE_CLIENT_ID: storage, Graph, Key Vault
// references, telemetry) and the bot's (BOT_APP_ID: Bot Connector tokens only). Basic-auth publishing (FTP,
// SCM) is off: deployments authenticate with Entra ID, so who may change code is decided by Azure RBAC on
// this app (docs/deploy.md). The app settings (allSettings) are checked by tests/infra against
// shared/settings.py's SETTINGS_VARIABLES: every required variable is set, no unknown name is, and every
// secret is a Key Vault reference.

@description('Name of the Function App.')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Region of the plan and the app.')
param location string

@description('Tags for the plan and the app.')
param tags object

@description('Resource id of the app\'s user-assigned identity.')
param appIdentityId string

@description('Client id of the app\'s user-assigned identity.')
param appIdentityClientId string

@description('Resource id of the bot\'s user-assigned identity.')
param botIdentityId string

@description('Client id of the bot\'s user-assigned identity: the bot\'s Microsoft App ID.')
param botIdentityClientId string

@description('Storage account of the host, the Durable task hub and the ledger.')
param storageAccountName string

@description('Blob container that holds the deployment package.')
param deploymentContainerName string

@description('Application Insights component.')
param applicationInsightsName string

@description('Key Vault URI (https://<name>.vault.azure.net/) whose secrets the app settings reference.')
param keyVaultUri string

@description('Always-ready instances for the durable group (orchestrators, activities, entities): approvals and proof polling do not wait on a cold start.')
@minValue(0)
@maxValue(10)
param durableAlwaysReadyInstances int = 1

@description('Upper bound of instances. The app is low volume; a low bound also bounds the Graph calls a runaway could make.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per instance.')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Entra tenant whose PIM roles the app manages (ENTRA_TENANT_ID).')
param entraTenantId string

@description('Microsoft Graph base URL, version included (GRAPH_BASE_URL).')
param graphBaseUrl string

@description('Exchange Online admin API base URL (EXCHANGE_ADMIN_BASE_URL).')
param exchangeAdminBaseUrl string

@description('Bot Framework OpenID metadata URL (BOT_OPENID_METADATA_URL).')
param botOpenIdMetadataUrl string

@description('Bot Connector service URL for proactive Teams posts (BOT_CONNECTOR_SERVICE_URL).')
param botConnectorServiceUrl string

@description('Policy file, relative to the app root (POLICY_PATH).')
param policyPath string

@description('NCRONTAB schedule of the expiry sweep (SWEEP_SCHEDULE); the host reads it as %SWEEP_SCHEDULE%.')
param sweepSchedule string

@description('ITSM systems the policy enables; each gets its base URL, webhook secret and API credentials.')
param itsmSystems array

@description('Roster provider the policy uses (pagerduty and servicenow_rota need credentials).')
param rosterProvider string

@description('Systems whose previous webhook secret is still accepted (a rotation in progress).')
param webhookSecretsInRotation array

param servicenowBaseUrl string
param servicenowApiUser string
param jiraBaseUrl string
param jiraApiEmail string
param ivantiBaseUrl string
param xurrentBaseUrl string
param pagerdutyBaseUrl string

@description('AzureStorage or DurableTaskScheduler.')
param durableBackend string

@description('Durable Task Scheduler endpoint (DurableTaskScheduler backend only).')
param durableTaskSchedulerEndpoint string = ''

@description('Durable task hub name (DurableTaskScheduler backend only; host.json names the Azure Storage hub).')
param taskHubName string = ''

var useDurableTaskScheduler = durableBackend == 'DurableTaskScheduler'
var usesServiceNow = contains(itsmSystems, 'servicenow') || rosterProvider == 'servicenow_rota'
var usesPagerDuty = rosterProvider == 'pagerduty'
var servicenowRotating = contains(itsmSystems, 'servicenow') && contains(webhookSecretsInRotation, 'servicenow')
var jiraRotating = contains(itsmSystems, 'jira') && contains(webhookSecretsInRotation, 'jira')
var ivantiRotating = contains(itsmSystems, 'ivanti') && contains(webhookSecretsInRotation, 'ivanti')
var secretsUri = '${keyVaultUri}secrets'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  // checkov:skip=CKV_AZURE_225: zone redundancy for Flex Consumption is regional and bills always-ready instances in every zone; not enabled in this first version
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd finds the app to deploy service `api` (azure.yaml) by this tag.
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${appIdentityId}': {}
      '${botIdentityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    // checkov:skip=CKV_AZURE_212: numberOfWorkers does not apply to Flex Consumption; the durable group keeps always-ready instances instead
    // checkov:skip=CKV_AZURE_213: Flex Consumption scales per function from zero; no anonymous health endpoint exists (every route authenticates its caller)
    httpsOnly: true
    // ServiceNow, Jira and Teams (Bot Framework) call the app from the internet; each endpoint authenticates
    // its caller itself (webhook HMAC, Bot Framework JWT, function keys).
    // checkov:skip=CKV_AZURE_222: the ITSM webhooks and the Teams bot endpoint must be reachable from the ITSM SaaS and the Bot Framework
    // checkov:skip=CKV_AZURE_17: ServiceNow, Jira and the Bot Framework present no client certificates; callers are authenticated per endpoint
    publicNetworkAccess: 'Enabled'
    // With only user-assigned identities, Key Vault references need to be told which one to use.
    keyVaultReferenceIdentity: appIdentityId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      // The site's whole app-setting list, built from allSettings below (name/value pairs).
      appSettings: [for setting in items(allSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: appIdentityId
          }
        }
      }
      scaleAndConcurrency: {
        alwaysReady: [
          {
            name: 'durable'
            instanceCount: durableAlwaysReadyInstances
          }
        ]
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

// No publishing with user name + password: code reaches the app only through Entra ID-authenticated deployments.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// The Functions host and its extensions. Identity-based AzureWebJobsStorage: no connection string, no key.
// Flex Consumption sets the runtime itself (functionAppConfig.runtime) and refuses FUNCTIONS_WORKER_RUNTIME and
// FUNCTIONS_EXTENSION_VERSION as app settings.
var hostSettings = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: appIdentityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  // Also the audit ledger's endpoint: shared/settings.py reads it as the identity-based table target.
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  // An identifier, not a credential: the component refuses key-based ingestion (monitoring.bicep).
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${appIdentityClientId};Authorization=AAD'
}

// shared/settings.py: the required variables and the optional ones a deployment always sets.
var appSettings = {
  AZURE_CLIENT_ID: appIdentityClientId
  ENTRA_TENANT_ID: entraTenantId
  GRAPH_BASE_URL: graphBaseUrl
  EXCHANGE_ADMIN_BASE_URL: exchangeAdminBaseUrl
  BOT_APP_ID: botIdentityClientId
  BOT_OPENID_METADATA_URL: botOpenIdMetadataUrl
  BOT_CONNECTOR_SERVICE_URL: botConnectorServiceUrl
  POLICY_PATH: policyPath
  SWEEP_SCHEDULE: sweepSchedule
}

// The Durable Task Scheduler backend. host.json ships with the Azure Storage provider (what the local runtime
// emulates); the host reads `AzureFunctionsJobHost__<path>` app settings as overrides of host.json, so the
// same package runs on either backend and this choice stays a deployment parameter (docs/deploy.md). The
// "connection string" holds an endpoint and the identity's client id, no key.
var durableTaskSchedulerSettings = useDurableTaskScheduler ? {
  DURABLE_TASK_SCHEDULER_CONNECTION_STRING: 'Endpoint=${durableTaskSchedulerEndpoint};Authentication=ManagedIdentity;ClientID=${appIdentityClientId}'
  TASKHUB_NAME: taskHubName
  AzureFunctionsJobHost__extensions__durableTask__hubName: '%TASKHUB_NAME%'
  AzureFunctionsJobHost__extensions__durableTask__storageProvider__type: 'azureManaged'
  AzureFunctionsJobHost__extensions__durableTask__storageProvider__connectionStringName: 'DURABLE_TASK_SCHEDULER_CONNECTION_STRING'
} : {}

// Per ITSM / roster provider, only what the policy uses: a reference to a secret nobody wrote would reach the
// app unresolved, and the app refuses to start on one (shared/settings.py). Secrets are versionless
// references, so a new secret version is picked up without a deployment.
var servicenowSettings = usesServiceNow ? {
  SERVICENOW_BASE_URL: servicenowBaseUrl
  SERVICENOW_API_USER: servicenowApiUser
  SERVICENOW_API_PASSWORD: '@Microsoft.KeyVault(SecretUri=${secretsUri}/servicenow-api-password/)'
} : {}
var servicenowWebhookSettings = contains(itsmSystems, 'servicenow') ? {
  SERVICENOW_WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${secretsUri}/servicenow-webhook-secret/)'
} : {}
var servicenowRotationSettings = servicenowRotating ? {
  SERVICENOW_WEBHOOK_SECRET_PREVIOUS: '@Microsoft.KeyVault(SecretUri=${secretsUri}/servicenow-webhook-secret-previous/)'
} : {}
var jiraSettings = contains(itsmSystems, 'jira') ? {
  JIRA_BASE_URL: jiraBaseUrl
  JIRA_API_EMAIL: jiraApiEmail
  JIRA_API_TOKEN: '@Microsoft.KeyVault(SecretUri=${secretsUri}/jira-api-token/)'
  JIRA_WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${secretsUri}/jira-webhook-secret/)'
} : {}
var jiraRotationSettings = jiraRotating ? {
  JIRA_WEBHOOK_SECRET_PREVIOUS: '@Microsoft.KeyVault(SecretUri=${secretsUri}/jira-webhook-secret-previous/)'
} : {}
var ivantiSettings = contains(itsmSystems, 'ivanti') ? {
  IVANTI_BASE_URL: ivantiBaseUrl
  IVANTI_WEBHOOK_SECRET: '@Microsoft.KeyVault(SecretUri=${secretsUri}/ivanti-webhook-secret/)'
} : {}
var ivantiRotationSettings = ivantiRotating ? {
  IVANTI_WEBHOOK_SECRET_PREVIOUS: '@Microsoft.KeyVault(SecretUri=${secretsUri}/ivanti-webhook-secret-previous/)'
} : {}
// Xurrent signs its webhooks with a JWT verified with a key (not supported by the app yet): a base URL only.
var xurrentSettings = contains(itsmSystems, 'xurrent') ? {
  XURRENT_BASE_URL: xurrentBaseUrl
} : {}
var pagerdutySettings = usesPagerDuty ? {
  PAGERDUTY_BASE_URL: pagerdutyBaseUrl
  PAGERDUTY_API_TOKEN: '@Microsoft.KeyVault(SecretUri=${secretsUri}/pagerduty-api-token/)'
} : {}

// Every app setting, in one object: tests/infra reads this union to check it against shared/settings.py.
var allSettings = union(
  hostSettings,
  appSettings,
  durableTaskSchedulerSettings,
  servicenowSettings,
  servicenowWebhookSettings,
  servicenowRotationSettings,
  jiraSettings,
  jiraRotationSettings,
  ivantiSettings,
  ivantiRotationSettings,
  xurrentSettings,
  pagerdutySettings
)

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
