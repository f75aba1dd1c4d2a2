// Validates Istio custom resources offline against the Istio CRD schemas, as shipped by the npm package
// @kubernetes-models/istio (validators and TypeScript types generated from Istio's crd-all.gen.yaml; the
// package's own package.json names the Istio release it was generated from).
//
//   node validate.mjs docs.json [workdir]
//
// docs.json: a JSON array of Kubernetes objects (non-Istio kinds are reported as "skipped").
// Prints one JSON object: {"istioCrdSource": [...], "results": [{"index", "kind", "name", "status",
// "errors": [...]}]} where status is "ok" | "invalid" | "skipped" | "unknown-kind".
//
// Two checks per object, both must pass:
//  1. schema: the package's generated validator (OpenAPI v3 schema of the CRD: types, enums, patterns,
//     required fields, lengths, ranges).
//  2. fields: the CRD schema has no `additionalProperties: false`, yet the API server prunes or (with
//     kubectl's default strict field validation) rejects unknown fields. The package's generated TypeScript
//     interfaces list exactly the schema's properties, so the object literals are type-checked with tsc:
//     an unknown or misspelt field is an excess-property error. `x-kubernetes-preserve-unknown-fields`
//     objects such as WasmPlugin.spec.pluginConfig are typed `{}` and accept anything.
// CEL rules (x-kubernetes-validations) are not in the package; the Python test transcribes the relevant ones.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";

// Packages are resolved from the current directory (run it where `npm ci` installed node_modules).
const require = createRequire(path.join(process.cwd(), "noop.js"));
const ISTIO_GROUPS = new Set([
  "extensions.istio.io", "networking.istio.io", "security.istio.io", "telemetry.istio.io",
]);

const [docsPath, workdirArg] = process.argv.slice(2);
if (!docsPath) {
  console.error("usage: node validate.mjs docs.json [workdir]");
  process.exit(2);
}
const docs = JSON.parse(readFileSync(docsPath, "utf8"));
const pkgJson = require.resolve("@kubernetes-models/istio/package.json");
const pkgDir = path.dirname(pkgJson);
const pkg = JSON.parse(readFileSync(pkgJson, "utf8"));

const results = [];
const typed = [];
for (const [index, doc] of docs.entries()) {
  const [group, version] = String(doc.apiVersion || "").split("/");
  const kind = String(doc.kind || "");
  const name = `${doc.metadata?.namespace ?? ""}/${doc.metadata?.name ?? ""}`;
  const result = { index, kind, apiVersion: doc.apiVersion, name, status: "ok", errors: [] };
  results.push(result);
  if (!ISTIO_GROUPS.has(group) || !version) {
    result.status = "skipped";
    continue;
  }
  const modulePath = path.join(pkgDir, group, version, `${kind}.js`);
  let mod;
  try {
    mod = await import(modulePath);
  } catch (e) {
    result.status = "unknown-kind";
    result.errors.push(`no schema for ${doc.apiVersion} ${kind} in @kubernetes-models/istio ${pkg.version}`);
    continue;
  }
  const Model = mod[kind];
  try {
    new Model(doc).validate();
  } catch (e) {
    result.status = "invalid";
    for (const err of e.errors ?? []) {
      const where = err.instancePath || "/";
      result.errors.push(`schema: ${where} ${err.message ?? err.keyword} ${JSON.stringify(err.params ?? {})}`);
    }
    if (!e.errors) result.errors.push(`schema: ${e.message}`);
  }
  typed.push({ index, group, version, kind });
}

// Field check: one object literal per line, so tsc's line numbers map back to documents.
if (typed.length) {
  const work = workdirArg || mkdtempSync(path.join(tmpdir(), "istio-tsc-"));
  const lines = [];
  const lineToIndex = new Map();
  const imported = new Map();
  for (const t of typed) {
    const key = `${t.group}/${t.version}/${t.kind}`;
    if (!imported.has(key)) {
      const alias = `I${imported.size}`;
      imported.set(key, alias);
      lines.push(`import type { I${t.kind} as ${alias} } from ${JSON.stringify(path.join(pkgDir, t.group, t.version, `${t.kind}.js`))};`);
    }
  }
  for (const t of typed) {
    lines.push(`export const doc${t.index}: ${imported.get(`${t.group}/${t.version}/${t.kind}`)} = ${JSON.stringify(docs[t.index])};`);
    lineToIndex.set(lines.length, t.index);
  }
  const tsFile = path.join(work, "istio-docs.ts");
  writeFileSync(tsFile, lines.join("\n") + "\n");
  writeFileSync(path.join(work, "tsconfig.json"), JSON.stringify({
    compilerOptions: {
      strict: true, noEmit: true, target: "es2022", module: "nodenext", moduleResolution: "nodenext",
      skipLibCheck: true, types: [], exactOptionalPropertyTypes: false,
    },
    files: [tsFile],
  }));
  const tsc = require.resolve("typescript/bin/tsc");
  let out = "";
  try {
    execFileSync(process.execPath, [tsc, "-p", path.join(work, "tsconfig.json"), "--pretty", "false"],
      { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    out = `${e.stdout ?? ""}${e.stderr ?? ""}`;
    if (!out.trim()) throw e;
  }
  for (const line of out.split("\n")) {
    const m = line.match(/\((\d+),(\d+)\): error (TS\d+): (.*)$/);
    if (!m) continue;
    const index = lineToIndex.get(Number(m[1]));
    if (index === undefined) {
      console.error(`tsc: ${line}`);
      process.exit(3);
    }
    const result = results[index];
    result.status = "invalid";
    result.errors.push(`fields: ${m[3]} ${m[4]}`);
  }
}

console.log(JSON.stringify({
  package: `${pkg.name}@${pkg.version}`,
  istioCrdSource: pkg["crd-generate"]?.input ?? [],
  results,
}));
