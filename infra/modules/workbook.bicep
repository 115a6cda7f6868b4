// The Azure Monitor workbook "PIM emergency access": what the automation did, from its telemetry
// (shared/telemetry.py, one "pim.step" trace per audit row). Each tile's query is a file in
// infra/monitoring/workbook/, after the shared PimSteps definition (infra/monitoring/steps.kql).

@description('Region of the workbook.')
param location string

@description('Tags for the workbook.')
param tags object

@description('Log Analytics workspace the app\'s telemetry lands in.')
param logAnalyticsId string

@description('Display name of the workbook in the portal.')
param displayName string = 'PIM emergency access'

var steps = loadTextContent('../monitoring/steps.kql')

// visualization: table, barchart, piechart, timechart (the workbook's KqlItem types).
var tiles = [
  {
    name: 'requests-by-outcome'
    title: 'Requests by outcome (latest state)'
    query: loadTextContent('../monitoring/workbook/requests-by-outcome.kql')
    visualization: 'piechart'
  }
  {
    name: 'time-to-approval'
    title: 'Time to approval (seconds from the webhook), by tier'
    query: loadTextContent('../monitoring/workbook/time-to-approval.kql')
    visualization: 'table'
  }
  {
    name: 'time-to-effective-access'
    title: 'Time to effective access (seconds from the webhook), by role'
    query: loadTextContent('../monitoring/workbook/time-to-effective-access.kql')
    visualization: 'table'
  }
  {
    name: 'pim-propagation-by-role'
    title: 'PIM propagation delay (seconds after submission), by role'
    query: loadTextContent('../monitoring/workbook/pim-propagation-by-role.kql')
    visualization: 'table'
  }
  {
    name: 'failures-by-error-code'
    title: 'Failures by error code'
    query: loadTextContent('../monitoring/workbook/failures-by-error-code.kql')
    visualization: 'table'
  }
  {
    name: 'grants-active-now'
    title: 'Grants active now'
    query: loadTextContent('../monitoring/workbook/grants-active-now.kql')
    visualization: 'table'
  }
  {
    name: 'sweep-actions'
    title: 'Sweep actions'
    query: loadTextContent('../monitoring/workbook/sweep-actions.kql')
    visualization: 'table'
  }
  {
    name: 'sweep-runs'
    title: 'Sweep runs per hour'
    query: loadTextContent('../monitoring/workbook/sweep-runs.kql')
    visualization: 'timechart'
  }
  {
    name: 'signals'
    title: 'Alert signals per hour'
    query: loadTextContent('../monitoring/workbook/signals.kql')
    visualization: 'timechart'
  }
]

var header = {
  type: 1
  name: 'header'
  content: {
    json: '## PIM emergency access\nEvery step the automation recorded, from its telemetry (one trace per audit row). The audit ledger in Table Storage is the record; docs/operations.md explains each alert.'
  }
}

var timeRange = {
  type: 9
  name: 'parameters'
  content: {
    version: 'KqlParameterItem/1.0'
    parameters: [
      {
        id: '6f1c3c2e-4f55-4b8e-9d0e-2f7d1d1a0b01'
        version: 'KqlParameterItem/1.0'
        name: 'TimeRange'
        label: 'Time range'
        type: 4
        isRequired: true
        value: {
          durationMs: 604800000
        }
        typeSettings: {
          selectableValues: [
            {
              durationMs: 3600000
            }
            {
              durationMs: 86400000
            }
            {
              durationMs: 604800000
            }
            {
              durationMs: 2592000000
            }
          ]
        }
      }
    ]
  }
}

var queryItems = [for tile in tiles: {
  type: 3
  name: tile.name
  content: {
    version: 'KqlItem/1.0'
    title: tile.title
    query: '${steps}\n${tile.query}'
    size: 0
    queryType: 0
    resourceType: 'microsoft.operationalinsights/workspaces'
    crossComponentResources: [
      logAnalyticsId
    ]
    visualization: tile.visualization
    timeContextFromParameter: 'TimeRange'
    timeContext: {
      durationMs: 604800000
    }
  }
}]

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'pim-emergency-access-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: logAnalyticsId
    serializedData: string({
      version: 'Notebook/1.0'
      items: concat([header, timeRange], queryItems)
      fallbackResourceIds: [
        logAnalyticsId
      ]
    })
  }
}

output name string = workbook.name
