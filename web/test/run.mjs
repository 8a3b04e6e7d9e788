// Bundles the unit tests (TypeScript) with esbuild and runs them with
// node's test runner: no browser, no extra test framework.
import { build } from "esbuild";
import { readdirSync } from "node:fs";
import { run } from "node:test";
import { spec } from "node:test/reporters";

const tests = readdirSync("test").filter((f) => f.endsWith(".test.ts"));
await build({
  entryPoints: tests.map((t) => `test/${t}`),
  outdir: "dist-test",
  bundle: true,
  platform: "node",
  format: "esm",
  outExtension: { ".js": ".mjs" },
  logLevel: "warning",
});
const files = tests.map((t) => `dist-test/${t.replace(/\.ts$/, ".mjs")}`);
let failed = false;
const stream = run({ files }).on("test:fail", () => (failed = true));
stream.compose(spec).pipe(process.stdout);
stream.on("end", () => process.exit(failed ? 1 : 0));
