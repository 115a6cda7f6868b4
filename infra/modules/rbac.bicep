// Every Azure role assignment of the deployment, each scoped to the one resource it concerns (none at
// subscription or resource-group scope). Names are guid(scope, principal, role): deterministic, so a second
// `azd provision` finds the same assignment instead of failing with RoleAssignmentExists.
//
// The bot's identity gets no Azure role at all: it only obtains Bot Connector tokens. The Graph application
// permissions and the Entra role (Privileged Role Administrator) of the app's identity are not Azure RBAC;
// the admin script grants them (docs/deploy.md, "Permissions").

@description('Storage account of the Functions host, the Durable task hub and the audit ledger.')
param storageAccountName string

@description('Key Vault that holds the ITSM secrets.')
param keyVaultName string

@description('Application Insights component the app sends telemetry to.')
param applicationInsightsName string

@description('Log Analytics workspace the alert rules query.')
param logAnalyticsName string

@description('Principal (object) id of the app\'s user-assigned managed identity.')
param appIdentityPrincipalId string

@description('Principal (object) id of the alert rules\' user-assigned managed identity.')
param alertsIdentityPrincipalId string

@description('Durable Task Scheduler name when that backend is chosen; empty for the Azure Storage backend.')
param durableTaskSchedulerName string = ''

@description('Object id of a person or group allowed to write the ITSM secrets into the vault (Key Vault Secrets Officer); empty for none.')
param secretsOfficerPrincipalId string = ''

@description('Kind of principal secretsOfficerPrincipalId names.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param secretsOfficerPrincipalType string = 'User'

// Built-in role definition ids (the same in every tenant).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var durableTaskDataContributor = '0ad04412-c4d5-4796-b79c-f76d14c8d402'
var logAnalyticsReader = '73c42c96-874c-492b-b04d-ab87d138a893'

var useDurableTaskScheduler = !empty(durableTaskSchedulerName)
var hasSecretsOfficer = !empty(secretsOfficerPrincipalId)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsName
}

resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' existing = if (useDurableTaskScheduler) {
  name: durableTaskSchedulerName
}

// The Functions host keeps its keys, timer leases and singleton locks in blobs; the Durable extension its
// large payloads and partition leases; Flex Consumption reads the deployment package from a container.
resource appBlobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentityPrincipalId, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: appIdentityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Functions host storage, Durable payloads and leases, Flex Consumption deployment package'
  }
}

// The Durable extension's control and work-item queues (Azure Storage backend).
resource appQueueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentityPrincipalId, storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributor)
    principalId: appIdentityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Durable Functions control and work-item queues'
  }
}

// The audit ledger, grant ledger, vote rows, circuit breaker and sweep state; the Durable instance and history
// tables (Azure Storage backend).
resource appTableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appIdentityPrincipalId, storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: appIdentityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Audit and grant ledgers, approvals, circuit breaker, sweep; Durable instance and history tables'
  }
}

// Key Vault references in the app settings are resolved with the app's identity (keyVaultReferenceIdentity).
resource appKeyVaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, appIdentityPrincipalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: appIdentityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Resolve the Key Vault references of the ITSM webhook secrets and API credentials'
  }
}

// Entra ID-authenticated telemetry ingestion (the component has local authentication disabled).
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appIdentityPrincipalId, monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: appIdentityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Send telemetry to Application Insights with Entra ID authentication'
  }
}

resource appDurableTaskDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useDurableTaskScheduler) {
  name: guid(scheduler.id, appIdentityPrincipalId, durableTaskDataContributor)
  scope: scheduler
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributor)
    principalId: appIdentityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Durable Functions orchestrations, activities and timers on the Durable Task Scheduler'
  }
}

// Optional: whoever runs the deployment writes the ITSM secrets once. Remove this assignment afterwards, or
// leave secretsOfficerPrincipalId empty and grant the role just in time (PIM for Azure resources).
resource operatorKeyVaultSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasSecretsOfficer) {
  name: guid(vault.id, secretsOfficerPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: secretsOfficerPrincipalId
    principalType: secretsOfficerPrincipalType
    description: 'Write the ITSM webhook secrets and API credentials of the emergency-access app'
  }
}

// The alert rules (alerts.bicep) read the app's telemetry in the workspace, and nothing else.
resource alertsLogAnalyticsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(logAnalytics.id, alertsIdentityPrincipalId, logAnalyticsReader)
  scope: logAnalytics
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', logAnalyticsReader)
    principalId: alertsIdentityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Alert rules: log search over the app\'s telemetry'
  }
}
