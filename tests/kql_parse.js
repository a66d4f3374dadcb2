// Parses KQL texts with Microsoft's Kusto language service against given table schemas and
// prints every text's diagnostics as JSON: one process for all texts, so the test stays fast.
//
// stdin:  {"tables": [{"name": "T", "columns": [{"name": "c", "type": "string"}]}],
//          "queries": [{"id": "readme-1", "text": "T | take 1"}]}
// stdout: {"readme-1": {"diagnostics": [{"severity": "Error", "code": "KS142", "message": "...",
//                                         "start": 4, "length": 1}],
//                        "columns": [{"name": "c", "type": "string"}]}}
// (`columns`: the result's columns when the query returns a table, else null.)
"use strict";

const path = require("path");
const service = path.dirname(require.resolve("@kusto/language-service-next/package.json"));
require(path.join(service, "bridge.min.js"));
require(path.join(service, "Kusto.Language.Bridge.min.js"));

const Symbols = Kusto.Language.Symbols;

function schemaText(columns) {
  return "(" + columns.map((c) => `['${c.name}']:${c.type}`).join(", ") + ")";
}

function globals(tables) {
  const symbols = tables.map((t) => new Symbols.TableSymbol.$ctor7(t.name, schemaText(t.columns), null));
  const database = new Symbols.DatabaseSymbol.$ctor1("workspace", symbols);
  return Kusto.Language.GlobalState.Default.WithDatabase(database);
}

function analysis(text, state) {
  const code = Kusto.Language.KustoCode.ParseAndAnalyze(text, state);
  const found = code.GetDiagnostics();
  const diagnostics = [];
  for (let i = 0; i < found.Count; i++) {
    const d = found.getItem(i);
    diagnostics.push({ severity: d.Severity, code: d.Code, message: d.Message, start: d.Start, length: d.Length });
  }
  let columns = null;
  if (code.ResultType instanceof Symbols.TableSymbol) {
    columns = [];
    const result = code.ResultType.Columns;
    for (let i = 0; i < result.Count; i++) {
      const c = result.getItem(i);
      columns.push({ name: c.Name, type: c.Type.Name });
    }
  }
  return { diagnostics, columns };
}

const request = JSON.parse(require("fs").readFileSync(0, "utf8"));
const state = globals(request.tables);
const result = {};
for (const query of request.queries) {
  result[query.id] = analysis(query.text, state);
}
process.stdout.write(JSON.stringify(result));
