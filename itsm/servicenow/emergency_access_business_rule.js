/*
 * PIM emergency access: send incident changes to the Function App, signed (POST /api/itsm/servicenow).
 *
 * Install it as a Business Rule in the global scope (System Definition > Business Rules > New):
 *
 *   Name               PIM emergency access webhook
 *   Table              Incident [incident]
 *   Active             true
 *   Advanced           true
 *   When               async
 *   Insert / Update    true / true          (Delete and Query: false)
 *   Filter Conditions  PIM role (u_pim_role) is not empty
 *   Condition          the text after "CONDITION: " on the line below, as one line (253 characters:
 *                      kept under 255 in case your release limits the field's length)
 *   Script             this whole file
 *
 * It reads two system properties (sys_properties.list; docs/deploy.md, "Wiring ServiceNow"):
 *
 *   x_pim.webhook_endpoint  string     https://<function app host>/api/itsm/servicenow
 *   x_pim.webhook_secret    password2  the value of the Key Vault secret servicenow-webhook-secret
 *
 * No function key: the route is anonymous at the Functions level, and this signature is its
 * authentication (orchestrators/intake.py, shared/webhooks.py).
 *
 * Why async: the HTTP call must not slow down or fail the agent's save, and the job reads the committed
 * record. An async rule's script runs later, in a background job, with `current` read from the database at
 * that time and no `previous`. So `changes()` and `operation()` only mean something in the Condition, which
 * ServiceNow evaluates in the saving transaction. That is why the change test lives in the Condition.
 *
 * Why these fields, and only these: the app decides on priority (the P1 trigger), the assignee (the
 * responder), the state (states 6 Resolved, 7 Closed and 8 Canceled are a resolution: the app then ends
 * every access granted for the ticket) and the access request itself (role, access type, duration,
 * justification). Work notes are not in the list on purpose: the app writes its progress as work notes,
 * and those updates must not come back to it as new deliveries. A change to any other field is not sent.
 *
 * tests/integration/test_itsm_wiring.py runs this file under Node.js with stubs of the ServiceNow APIs,
 * and checks that the app's own code verifies the signature and parses the payload. Keep it ES5: the
 * global scope runs on Rhino.
 */
// CONDITION: current.operation()=='insert'||current.priority.changes()||current.state.changes()||current.assigned_to.changes()||current.u_pim_role.changes()||current.u_pim_access_type.changes()||current.u_pim_duration.changes()||current.u_pim_justification.changes()
(function executeRule(current, previous /* null when async */) {
    // Where the incident keeps the access request. If your form uses other fields, change them here and
    // in the Condition and Filter Conditions above.
    var FIELDS = {
        role: 'u_pim_role',                   // the role's name as policy/policy.toml spells it
        accessType: 'u_pim_access_type',      // "privileged" is the only type that starts a request
        duration: 'u_pim_duration',           // ISO 8601: PT30M, PT1H, PT2H
        justification: 'u_pim_justification'  // free text
    };
    var ENDPOINT_PROPERTY = 'x_pim.webhook_endpoint';
    var SECRET_PROPERTY = 'x_pim.webhook_secret';
    var MIN_SECRET_LENGTH = 32;        // the app refuses shorter webhook secrets (shared/settings.py)
    var ATTEMPTS = 3;                  // a lost resolution leaves access in place until its maximum duration
    var RETRY_WAIT_MS = 2000;          // doubled before the third attempt
    var HTTP_TIMEOUT_MS = 20000;
    var RESOLVED_STATES = { '6': true, '7': true, '8': true };  // Resolved, Closed, Canceled
    var LOG_PREFIX = 'PIM emergency access webhook: ';

    // Plain JavaScript strings: JSON.stringify must never see a Java string or a GlideElement.
    function text(value) {
        return value === null || value === undefined ? '' : String(value);
    }

    function user(element) {
        if (element.nil()) {
            return null;
        }
        return { user_name: text(element.user_name), email: text(element.email) };
    }

    // Escape every non-ASCII character as \uXXXX. The body is then plain ASCII, so the bytes signed here
    // and the bytes sent are the same, whatever character set the HTTP client or the MAC uses.
    function asciiJson(value) {
        return JSON.stringify(value).replace(/[\u007f-\uffff]/g, function (ch) {
            return '\\u' + ('0000' + ch.charCodeAt(0).toString(16)).slice(-4);
        });
    }

    // generateMac answers in base64; the app compares lower-case hex (sha256=<64 hex digits>).
    function base64ToHex(b64) {
        var alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
        var bits = 0;
        var value = 0;
        var hex = '';
        for (var i = 0; i < b64.length; i++) {
            var c = b64.charAt(i);
            if (c === '=') {
                break;
            }
            var index = alphabet.indexOf(c);
            if (index < 0) {
                continue;
            }
            value = ((value << 6) | index) & 0xffff;
            bits += 6;
            if (bits >= 8) {
                bits -= 8;
                var octet = (value >> bits) & 0xff;
                hex += (octet < 16 ? '0' : '') + octet.toString(16);
            }
        }
        return hex;
    }

    // X-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)> (shared/webhooks.py).
    // generateMac takes the key base64-encoded and returns the MAC base64-encoded.
    function sign(secret, timestamp, body) {
        var key = GlideStringUtil.base64Encode(secret);
        var mac = new GlideCertificateEncryption().generateMac(key, 'HmacSHA256', timestamp + '.' + body);
        return 'sha256=' + base64ToHex(text(mac));
    }

    var number = text(current.getValue('number'));
    var role = text(current.getDisplayValue(FIELDS.role));
    if (!role) {
        return;  // not an access request (the Filter Conditions should already have said so)
    }
    var endpoint = text(gs.getProperty(ENDPOINT_PROPERTY, ''));
    // Surrounding whitespace is ignored, as the app ignores it around SERVICENOW_WEBHOOK_SECRET.
    var secret = text(gs.getProperty(SECRET_PROPERTY, '')).replace(/^\s+|\s+$/g, '');
    if (endpoint.indexOf('https://') !== 0 && endpoint.indexOf('http://') !== 0) {
        gs.error(LOG_PREFIX + number + ' not sent: set the system property ' + ENDPOINT_PROPERTY
            + ' to https://<function app host>/api/itsm/servicenow');
        return;
    }
    if (secret.length < MIN_SECRET_LENGTH) {
        gs.error(LOG_PREFIX + number + ' not sent: the system property ' + SECRET_PROPERTY + ' must hold the '
            + 'webhook secret (at least ' + MIN_SECRET_LENGTH + ' characters, the value of servicenow-webhook-secret)');
        return;
    }

    // The app reads a resolution from the event; created and updated are handled alike.
    var state = text(current.getValue('state'));
    var event = 'updated';
    if (RESOLVED_STATES[state]) {
        event = 'resolved';
    } else if (text(current.getValue('sys_mod_count')) === '0') {
        event = 'created';
    }

    var payload = {
        event: event,
        sys_id: text(current.getUniqueValue()),
        number: number,
        priority: text(current.getValue('priority')),
        state: state,
        short_description: text(current.getValue('short_description')),
        opened_by: user(current.opened_by),
        assigned_to: user(current.assigned_to),
        assignment_group: text(current.getDisplayValue('assignment_group')),
        // The record is the incident itself. For a record linked to an incident, read the linked one here.
        incident: {
            number: number,
            state: state,
            major_incident_state: current.isValidField('major_incident_state')
                ? text(current.getValue('major_incident_state')) : ''
        },
        access: {
            type: text(current.getValue(FIELDS.accessType)),
            role: role,
            duration: text(current.getValue(FIELDS.duration)),
            justification: text(current.getValue(FIELDS.justification))
        },
        // The same on every attempt below: the app answers a repeated delivery with the same request.
        delivery_id: text(current.getUniqueValue()) + ':' + text(current.getValue('sys_updated_on')) + ':'
            + text(current.getValue('sys_mod_count'))
    };
    var body = asciiJson(payload);

    for (var attempt = 1; attempt <= ATTEMPTS; attempt++) {
        // Signed at each attempt: the app refuses a timestamp more than 300 s away from its clock.
        var timestamp = String(Math.floor(new GlideDateTime().getNumericValue() / 1000));
        var request = new sn_ws.RESTMessageV2();
        request.setEndpoint(endpoint);
        request.setHttpMethod('post');
        request.setHttpTimeout(HTTP_TIMEOUT_MS);
        request.setRequestHeader('Content-Type', 'application/json');
        request.setRequestHeader('X-Signature-Timestamp', timestamp);
        request.setRequestHeader('X-Signature', sign(secret, timestamp, body));
        request.setRequestBody(body);  // exactly the signed text

        var status = 0;
        var answer = '';
        try {
            var response = request.execute();
            status = Number(response.getStatusCode()) || 0;
            answer = text(response.getBody());
            if (!status && response.haveError()) {
                answer = text(response.getErrorMessage());
            }
        } catch (e) {
            answer = text(e && e.message ? e.message : e);
        }
        // The app's answers name the request or the problem; they never contain a secret.
        var summary = number + ' (' + event + ') answered ' + status + ': ' + answer.substring(0, 500);
        if (status >= 200 && status < 300) {
            gs.info(LOG_PREFIX + summary);
            return;
        }
        // 401 (signature), 400 (payload), 404 (ITSM not enabled) and 413 need a person; retrying cannot help.
        var transient = status === 0 || status === 429 || status >= 500;
        if (!transient || attempt === ATTEMPTS) {
            gs.error(LOG_PREFIX + summary + (transient ? ' (gave up after ' + attempt + ' attempts)' : ''));
            return;
        }
        gs.warn(LOG_PREFIX + summary + ' (attempt ' + attempt + ' of ' + ATTEMPTS + ', retrying)');
        gs.sleep(RETRY_WAIT_MS * attempt);
    }
})(current, previous);
