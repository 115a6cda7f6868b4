// Runs a ServiceNow Business Rule script under Node.js with small stubs of the server APIs it uses, for
// tests/integration/test_itsm_wiring.py. Usage: node servicenow_stubs.js <rule.js> < scenarios.json
//
// stdin: {"scenarios": [scenario, ...]}; stdout: {"results": [result, ...]}, one result per scenario.
//
// scenario (mode "run", the default):
//   record      {field: value}: plain fields are strings ("" when empty); a reference field is an object
//               {"sys_id", "user_name", "email", "name"} or null (empty)
//   display     {field: display value} where it differs from the value (choice labels, references)
//   properties  {name: value} for gs.getProperty
//   nowMs       what GlideDateTime().getNumericValue() answers (milliseconds since the epoch)
//   responses   what each execute() answers in turn: {"status", "body"} or {"throw": "message"};
//               after the last one, the last one again
// result: {"requests": [{"endpoint", "method", "headers", "body", "timeoutMs", "messageName"}],
//          "logs": [{"level", "message"}], "sleeps": [ms], "macs": [{"algorithm", "key"}]}
//
// scenario (mode "condition"): record, operation ("insert" | "update"), changed ([field, ...]);
// result: {"condition": <the rule's CONDITION line>, "value": <what it evaluates to>}.
//
// The stubs behave as ServiceNow documents its APIs, where that matters to the signature:
// GlideCertificateEncryption.generateMac(key, "HmacSHA256", data) takes the key base64-encoded (it refuses
// anything else) and answers the MAC base64-encoded; GlideStringUtil.base64Encode encodes UTF-8 bytes;
// GlideRecord.getValue answers null for an empty field; a reference's getValue is its sys_id.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const vm = require('vm');

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function GlideElement(name, value, display, changed, reference) {
    this._name = name;
    this._value = value;
    this._display = display;
    this._changed = changed;
    if (reference) {
        for (const key of Object.keys(reference)) {
            this[key] = new GlideElement(key, reference[key] == null ? '' : String(reference[key]), undefined, false);
        }
    }
}
GlideElement.prototype.toString = function () { return this._value; };
GlideElement.prototype.nil = function () { return this._value === ''; };
GlideElement.prototype.changes = function () { return this._changed; };
GlideElement.prototype.getDisplayValue = function () {
    return this._display === undefined ? this._value : this._display;
};

function makeRecord(scenario) {
    const record = scenario.record || {};
    const display = scenario.display || {};
    const changed = new Set(scenario.changed || []);
    const elements = {};
    for (const name of Object.keys(record)) {
        const raw = record[name];
        let value;
        let reference = null;
        if (raw !== null && typeof raw === 'object') {
            reference = raw;
            value = String(raw.sys_id || '');
        } else {
            value = raw == null ? '' : String(raw);
        }
        elements[name] = new GlideElement(name, value, display[name], changed.has(name), reference);
    }
    const current = Object.assign({}, elements);
    const element = function (name) {
        if (!(name in elements)) {
            // A field the record does not have: ServiceNow answers undefined-ish values; fail loudly here.
            throw new Error('GlideRecord stub: the scenario record has no field ' + name);
        }
        return elements[name];
    };
    current.getValue = function (name) {
        const value = element(name)._value;
        return value === '' ? null : value;
    };
    current.getDisplayValue = function (name) { return element(name).getDisplayValue(); };
    current.getUniqueValue = function () { return element('sys_id')._value; };
    current.isValidField = function (name) { return name in elements; };
    current.operation = function () { return scenario.operation || 'update'; };
    current.getTableName = function () { return 'incident'; };
    return current;
}

function run(source, filename, scenario) {
    const result = { requests: [], logs: [], sleeps: [], macs: [] };
    const responses = scenario.responses || [{ status: 202, body: '{"requestId": "stub"}' }];
    let calls = 0;
    const properties = scenario.properties || {};

    function RESTMessageV2(name, method) {
        this._request = {
            endpoint: null, method: method || null, headers: {}, body: null, timeoutMs: null,
            messageName: name || null,
        };
    }
    RESTMessageV2.prototype.setEndpoint = function (url) { this._request.endpoint = String(url); };
    RESTMessageV2.prototype.setHttpMethod = function (method) { this._request.method = String(method); };
    RESTMessageV2.prototype.setHttpTimeout = function (ms) { this._request.timeoutMs = ms; };
    RESTMessageV2.prototype.setRequestHeader = function (name, value) {
        this._request.headers[String(name)] = String(value);
    };
    RESTMessageV2.prototype.setRequestBody = function (body) { this._request.body = String(body); };
    RESTMessageV2.prototype.execute = function () {
        result.requests.push(this._request);
        const answer = responses[Math.min(calls, responses.length - 1)];
        calls += 1;
        if (answer.throw) {
            throw new Error(answer.throw);
        }
        return {
            getStatusCode: function () { return answer.status; },
            getBody: function () { return answer.body || ''; },
            haveError: function () { return !answer.status; },
            getErrorMessage: function () { return answer.error || ''; },
        };
    };

    function GlideCertificateEncryption() {}
    GlideCertificateEncryption.prototype.generateMac = function (key, algorithm, data) {
        key = String(key);
        result.macs.push({ algorithm: String(algorithm), key: key });
        if (String(algorithm) !== 'HmacSHA256') {
            throw new Error('generateMac stub: only HmacSHA256 is modelled, not ' + algorithm);
        }
        if (!BASE64.test(key)) {
            throw new Error('generateMac: the key must be base64-encoded');
        }
        return crypto.createHmac('sha256', Buffer.from(key, 'base64'))
            .update(Buffer.from(String(data), 'utf8')).digest('base64');
    };

    const sandbox = {
        current: makeRecord(scenario),
        previous: null,  // async rules get no previous
        gs: {
            getProperty: function (name, fallback) {
                return Object.prototype.hasOwnProperty.call(properties, name) ? properties[name]
                    : (fallback === undefined ? null : fallback);
            },
            info: function (message) { result.logs.push({ level: 'info', message: String(message) }); },
            warn: function (message) { result.logs.push({ level: 'warn', message: String(message) }); },
            error: function (message) { result.logs.push({ level: 'error', message: String(message) }); },
            sleep: function (ms) { result.sleeps.push(ms); },
        },
        sn_ws: { RESTMessageV2: RESTMessageV2 },
        GlideCertificateEncryption: GlideCertificateEncryption,
        GlideStringUtil: {
            base64Encode: function (value) { return Buffer.from(String(value), 'utf8').toString('base64'); },
        },
        GlideDateTime: function () {
            this.getNumericValue = function () { return scenario.nowMs; };
        },
    };
    vm.runInNewContext(source, sandbox, { filename: filename });
    return result;
}

function condition(source, scenario) {
    const match = /^\/\/ CONDITION: (.+)$/m.exec(source);
    if (!match) {
        throw new Error('the rule has no "// CONDITION: " line');
    }
    const value = vm.runInNewContext(match[1], { current: makeRecord(scenario) });
    return { condition: match[1], value: value };
}

function main() {
    const rulePath = process.argv[2];
    const source = fs.readFileSync(rulePath, 'utf8');
    const input = JSON.parse(fs.readFileSync(0, 'utf8'));
    const results = input.scenarios.map(function (scenario) {
        return scenario.mode === 'condition' ? condition(source, scenario) : run(source, rulePath, scenario);
    });
    process.stdout.write(JSON.stringify({ results: results }));
}

main();
