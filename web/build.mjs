// Builds web/dist: one bundle per page (esbuild, TypeScript in, modern
// JavaScript out), each page's HTML set in the shared layout, and the
// index and stylesheet copied beside them. The gateway serves web/dist at
// `/`; nothing else is needed at run time.
import { build } from "esbuild";
import { cpSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";

const out = "dist";
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const scripts = readdirSync("src/pages").filter((f) => f.endsWith(".ts"));
await build({
  entryPoints: scripts.map((page) => `src/pages/${page}`),
  outdir: out,
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  sourcemap: true,
  logLevel: "warning",
});

// A page's HTML is its <main>, with `<!-- title: ... -->` on the first line.
const layout = readFileSync("src/layout.html", "utf8");
for (const file of readdirSync("src/pages").filter((f) => f.endsWith(".html"))) {
  const page = file.replace(/\.html$/, "");
  const source = readFileSync(`src/pages/${file}`, "utf8");
  const title = /<!-- title: (.+?) -->/.exec(source)?.[1];
  if (!title) throw new Error(`src/pages/${file}: the first line must be <!-- title: ... -->`);
  const html = layout
    .replaceAll("{{title}}", title)
    .replace("{{page}}", page)
    .replace("{{main}}", source.replace(/<!-- title: .+? -->\n/, ""));
  writeFileSync(`${out}/${file}`, html);
}
for (const file of ["index.html", "style.css"]) cpSync(`src/${file}`, `${out}/${file}`);
console.log(`web/dist: ${scripts.length} pages`);
