// Builds the plugin's browser assets into OUT (argument 1, default ./dist): app.js and app.css (esbuild,
// from src/ and the npm packages, nothing fetched at run time), and the icon sprite sheets the manifest
// names (sprites.svg for the light theme, sprites-dark.svg for the dark one) from Clarity's icon shapes.
import { build } from "esbuild";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { resolve } from "node:path";

const out = resolve(process.argv[2] || "dist");
mkdirSync(out, { recursive: true });

await build({
  entryPoints: { app: "src/main.js" },
  bundle: true, minify: true, sourcemap: false, format: "iife", target: ["chrome100", "firefox100", "safari15"],
  outdir: out, loader: { ".woff2": "file", ".woff": "file", ".svg": "file" }, assetNames: "[name]-[hash]",
  legalComments: "linked", logLevel: "warning",
});

// The sprite sheet: one 32x32 cell per icon, in a column; the manifest's definitions give each cell's y.
const { ICONS } = await import("./src/icons.js");
const shapes = await Promise.all(ICONS.map(async ([, shape]) => {
  const mod = await import(`@cds/core/icon/shapes/${shape}.js`);
  const entry = Object.values(mod).find((v) => Array.isArray(v) && v[0] === shape);
  const svg = entry[1].outline || entry[1].solid;
  return typeof svg === "string" ? svg : svg.toString();
}));
for (const [file, colour] of [["sprites.svg", "#565656"], ["sprites-dark.svg", "#dbe2e6"]]) {
  const cells = shapes.map((svg, i) =>
    `<svg x="0" y="${i * 32}" width="32" height="32" viewBox="0 0 36 36" fill="${colour}">${svg}</svg>`);
  writeFileSync(`${out}/${file}`, `<svg xmlns="http://www.w3.org/2000/svg" width="32" height="${shapes.length * 32}">${cells.join("")}</svg>\n`);
}
// Compressed once here, so the ZVM sends .gz files as they are to browsers that accept gzip.
for (const name of readdirSync(out).filter((n) => /\.(js|css|svg)$/.test(n))) {
  writeFileSync(`${out}/${name}.gz`, gzipSync(readFileSync(`${out}/${name}`), { level: 9 }));
}
writeFileSync(`${out}/BUILT`, new Date().toISOString() + "\n");
