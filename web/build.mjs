// Builds web/dist: one bundle per page (esbuild, TypeScript in, modern
// JavaScript out), the HTML pages and the stylesheet copied beside them.
// The gateway serves web/dist at `/`; nothing else is needed at run time.
import { build } from "esbuild";
import { cpSync, mkdirSync, readdirSync, rmSync } from "node:fs";

const out = "dist";
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const pages = readdirSync("src/pages").filter((f) => f.endsWith(".ts"));
await build({
  entryPoints: pages.map((page) => `src/pages/${page}`),
  outdir: out,
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  logLevel: "warning",
});
for (const file of readdirSync("src")) {
  if (file.endsWith(".html") || file.endsWith(".css")) {
    cpSync(`src/${file}`, `${out}/${file}`);
  }
}
console.log(`web/dist: ${pages.length} pages`);
