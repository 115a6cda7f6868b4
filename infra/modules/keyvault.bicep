// Key Vault for the ITSM webhook secrets and the ITSM / PagerDuty API credentials. RBAC mode (no access
// policies): the app's identity reads secrets as Key Vault Secrets User (rbac.bicep). The secrets themselves are
// never Bicep parameters: an operator writes them (docs/deploy.md), so their values stay out of deployment
// parameters, the deployment history and azd's environment files. Every read is logged to Log Analytics.

@description('Name of the vault (3-24 characters, globally unique; reserved for the soft-delete period after deletion).')
@minLength(3)
@maxLength(24)
param name string

@description('Region of the vault.')
param location string

@description('Tags for the vault.')
param tags object

@description('Log Analytics workspace that receives the vault\'s audit log (who read or changed which secret).')
param logAnalyticsWorkspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    // A deleted secret (or vault) can be recovered, never purged early, by anyone: the app is Tier-0.
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    // App Service resolves Key Vault references over the public endpoint unless the app has virtual network
    // integration (docs/deploy.md, checkov skips); access is Entra ID + RBAC only.
    // checkov:skip=CKV_AZURE_109: no virtual network in this deployment; RBAC mode, Entra ID only, every read audited
    // checkov:skip=CKV_AZURE_189: no virtual network in this deployment; RBAC mode, Entra ID only, every read audited
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource vaultAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
