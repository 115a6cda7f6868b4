// Parses and analyses KQL queries with Microsoft's Kusto language service (the parser and binder behind
// Azure Data Explorer's and Log Analytics' editors), offline. Input on stdin:
//   {"tables": {"AppTraces": "(TimeGenerated: datetime, Message: string, ...)"}, "queries": {"name": "..."}}
// Output on stdout: {"name": [{"severity", "code", "message", "start"}], ...}, every diagnostic per query.
require("@kusto/language-service-next/bridge.js");
require("@kusto/language-service-next/Kusto.Language.Bridge.js");

const K = Kusto.Language;
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const tables = Object.entries(input.tables).map(([name, schema]) =>
  K.Symbols.TableSymbol.From(schema).WithName(name));
const globals = K.GlobalState.Default.WithDatabase(new K.Symbols.DatabaseSymbol.ctor("workspace", tables));
const output = {};
for (const [name, text] of Object.entries(input.queries)) {
  const diagnostics = K.KustoCode.ParseAndAnalyze(text, globals).GetDiagnostics();
  output[name] = [];
  for (let i = 0; i < diagnostics.Count; i++) {
    const d = diagnostics.getItem(i);
    output[name].push({severity: d.Severity, code: d.Code, message: d.Message, start: d.Start});
  }
}
process.stdout.write(JSON.stringify(output));
