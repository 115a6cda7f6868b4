// Log Analytics + workspace-based Application Insights. Local (key-based) ingestion is off on both: the app
// sends telemetry with its managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING) and the identity holds
// Monitoring Metrics Publisher on the component (rbac.bicep). The instrumentation key inside the connection
// string is then an identifier, not a credential: nobody can write telemetry with it alone.

@description('Name of the Log Analytics workspace.')
param logAnalyticsName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Region of both resources.')
param location string

@description('Tags for both resources.')
param tags object

@description('Days Log Analytics keeps the app\'s telemetry (the audit ledger itself lives in Table Storage).')
@minValue(30)
@maxValue(730)
param retentionInDays int = 90

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      disableLocalAuth: true
    }
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: true
  }
}

// Names only: the connection string is read where it is needed (function-app.bicep, as an `existing`
// resource), so it never passes through module outputs or the deployment history.
output logAnalyticsId string = logAnalytics.id
output logAnalyticsName string = logAnalytics.name
output applicationInsightsName string = applicationInsights.name
