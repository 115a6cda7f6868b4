// The app's storage account: the Functions host (AzureWebJobsStorage), the Durable Functions task hub when
// the Azure Storage backend is chosen, the Flex Consumption deployment package, and the audit ledger's
// tables. Shared keys are off: every client (host, Durable extension, the app's own table client, the
// deployment) authenticates with the app's managed identity.

@description('Name of the storage account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the account.')
param location string

@description('Tags for the account.')
param tags object

@description('Redundancy. The audit ledger lives here: every allowed value keeps a copy in the paired region.')
@allowed([
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_GRS'

@description('Blob container that holds the deployment package of the Flex Consumption app.')
param deploymentContainerName string

// The tables the app writes (shared/audit.py, grants.py, request_index.py, approvals.py, breaker.py,
// sweep.py). The app also creates them if they are missing; creating them here makes the ledger part of the
// infrastructure a reviewer sees. tests/infra checks this list against the app's table names.
var ledgerTableNames = [
  'AuditRows'
  'AuditHeads'
  'Grants'
  'RequestIndex'
  'Deliveries'
  'Approvals'
  'CircuitBreaker'
  'Sweep'
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  // checkov:skip=CKV_AZURE_206: the Bicep runner does not resolve the skuName parameter; every allowed value is geo-redundant
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    // Reachable over the public endpoint, identity-authenticated only: a Flex Consumption app without
    // virtual network integration has no fixed outbound addresses to allow (docs/deploy.md, checkov skips).
    // checkov:skip=CKV_AZURE_35: no virtual network in this deployment; shared keys are off, every caller needs an Entra ID token and a data role
    // checkov:skip=CKV_AZURE_59: no virtual network in this deployment; shared keys are off, every caller needs an Entra ID token and a data role
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource ledgerTables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [
  for tableName in ledgerTableNames: {
    parent: tableService
    name: tableName
  }
]

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output tableEndpoint string = storage.properties.primaryEndpoints.table
