// Alert rules for what must never happen silently (docs/operations.md has a runbook for each), an action
// group that receives them, and nothing else. Each rule is a log search over the app's telemetry
// (shared/telemetry.py: one "pim.step" trace per audit row, with a `signal` on the rows that matter).
//
// The rules query the workspace under their own user-assigned identity, which holds Log Analytics Reader
// on it (rbac.bicep): the workspace has local auth off, and a rule should not depend on whoever created it.

@description('Prefix of the rules\' names (the deployment\'s resource token).')
param namePrefix string

@description('Region of the rules.')
param location string

@description('Tags for every resource.')
param tags object

@description('Log Analytics workspace the app\'s telemetry lands in.')
param logAnalyticsId string

@description('Resource id of the user-assigned identity the rules query with.')
param alertsIdentityId string

@description('Comma-separated email addresses the alerts go to (the IAM on-call mailbox); empty for none: add receivers to the action group yourself (SMS, Teams, ITSM).')
param alertEmails string = ''

@description('Refused signatures and tokens in 15 minutes that make a spike.')
@minValue(1)
param signatureRejectionThreshold int = 10

var steps = loadTextContent('../monitoring/steps.kql')
var emailAddresses = empty(alertEmails) ? [] : split(alertEmails, ',')

// severity: 0 critical, 1 error, 2 warning. Event rules fire for each evaluation that finds a row and
// stay fired until closed (autoMitigate false); the two threshold rules resolve themselves.
var rules = [
  {
    name: 'escalation'
    displayName: 'PIM emergency access: request escalated'
    description: 'A request escalated to IAM: access not proven effective by the role\'s deadline, or the activation failed. Runbook: docs/operations.md#escalation.'
    severity: 1
    query: loadTextContent('../monitoring/alerts/escalation.kql')
    window: 'PT5M'
    frequency: 'PT5M'
    operator: 'GreaterThan'
    threshold: 0
    measure: ''
    autoMitigate: false
  }
  {
    name: 'expired-grant-assigned'
    displayName: 'PIM emergency access: grant past expiry still assigned'
    description: 'The sweep found a grant past its expiry, or whose removal had failed, still assigned. Runbook: docs/operations.md#expired-grant-assigned.'
    severity: 0
    query: loadTextContent('../monitoring/alerts/expired-grant-assigned.kql')
    window: 'PT5M'
    frequency: 'PT5M'
    operator: 'GreaterThan'
    threshold: 0
    measure: ''
    autoMitigate: false
  }
  {
    name: 'unknown-assignment'
    displayName: 'PIM emergency access: assignment the ledger does not know'
    description: 'A managed role is held through an assignment no emergency-access request stands for. Runbook: docs/operations.md#unknown-assignment.'
    severity: 1
    query: loadTextContent('../monitoring/alerts/unknown-assignment.kql')
    window: 'PT5M'
    frequency: 'PT5M'
    operator: 'GreaterThan'
    threshold: 0
    measure: ''
    autoMitigate: false
  }
  {
    name: 'breaker-open'
    displayName: 'PIM emergency access: circuit breaker open'
    description: 'Microsoft Graph failed repeatedly and the app stopped calling it for the cool-down. Runbook: docs/operations.md#breaker-open.'
    severity: 1
    query: loadTextContent('../monitoring/alerts/breaker-open.kql')
    window: 'PT5M'
    frequency: 'PT5M'
    operator: 'GreaterThan'
    threshold: 0
    measure: ''
    autoMitigate: false
  }
  {
    name: 'chain-verification-failed'
    displayName: 'PIM emergency access: audit chain verification failed'
    description: 'An audit chain did not verify: a ledger row was changed after it was written. Runbook: docs/operations.md#chain-verification-failed.'
    severity: 0
    query: loadTextContent('../monitoring/alerts/chain-verification-failed.kql')
    window: 'PT5M'
    frequency: 'PT5M'
    operator: 'GreaterThan'
    threshold: 0
    measure: ''
    autoMitigate: false
  }
  {
    name: 'signature-rejected-spike'
    displayName: 'PIM emergency access: spike of rejected signatures'
    description: 'Many webhooks or Teams callbacks were refused for their signature or token. Runbook: docs/operations.md#signature-rejected-spike.'
    severity: 2
    query: loadTextContent('../monitoring/alerts/signature-rejected-spike.kql')
    window: 'PT15M'
    frequency: 'PT5M'
    operator: 'GreaterThanOrEqual'
    threshold: signatureRejectionThreshold
    measure: 'rejected'
    autoMitigate: true
  }
  {
    name: 'sweep-not-running'
    displayName: 'PIM emergency access: sweep has not run for 15 minutes'
    description: 'No completed sweep run in 15 minutes: expired access would stay assigned. Runbook: docs/operations.md#sweep-not-running.'
    severity: 1
    query: loadTextContent('../monitoring/alerts/sweep-not-running.kql')
    window: 'PT15M'
    frequency: 'PT5M'
    operator: 'LessThan'
    threshold: 1
    measure: 'runs'
    autoMitigate: true
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-pim-${namePrefix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'pim-alerts'
    enabled: true
    emailReceivers: [for (address, i) in emailAddresses: {
      name: 'email-${i}'
      emailAddress: trim(address)
      useCommonAlertSchema: true
    }]
  }
}

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: 'alert-pim-${rule.name}-${namePrefix}'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${alertsIdentityId}': {}
    }
  }
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      logAnalyticsId
    ]
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    criteria: {
      allOf: [
        {
          query: '${steps}\n${rule.query}'
          // A summarize rule compares its one measured column; an event rule counts the rows it finds.
          timeAggregation: empty(rule.measure) ? 'Count' : 'Total'
          metricMeasureColumn: empty(rule.measure) ? null : rule.measure
          operator: rule.operator
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: rule.autoMitigate
    // make test parses and binds every query with the Kusto language service (tests/infra/test_monitoring.py);
    // Azure's own check at creation would run under the rules' identity seconds after its role was assigned,
    // and fail the deployment while that role propagates.
    skipQueryValidation: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output actionGroupName string = actionGroup.name
output ruleNames array = [for (rule, i) in rules: alertRules[i].name]
