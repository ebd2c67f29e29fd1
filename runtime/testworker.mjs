// Assembles a test Worker in its own folder (one per run: runs may overlap): the project's own src/
// (byte for byte), tests/, bench/ and the harness (runtime/testworker/), with
// python_modules/ = the project's vendored SDK (the same files that deploy
// ships) plus pytest, Hypothesis and their pure-Python dependencies. Its
// wrangler.toml is the project's, with another name and main: the same
// compatibility date and flags, vars, D1 database id and R2 bucket.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ROOT, UserError } from "./common.mjs";

const TEST_DEPS_DIR = path.join(ROOT, ".cache", "python_modules-test");
const MODULE_ROOT = "root";
export const TEST_WORKER_NAME = "clairvora-tests";
// Binary test fixtures travel as Data modules (visible in the bundle's file system).
const DATA_GLOBS = ["**/*.jpg", "**/*.gif", "**/*.webp", "**/*.png", "**/*.md"];

function copyTree(from, to, keep = () => true) {
  fs.cpSync(from, to, {
    recursive: true,
    filter: (src) => !src.includes("__pycache__") && !src.endsWith(".pyc") && keep(src),
  });
}

export function testWorkerConfig(projectToml) {
  const lines = projectToml.split("\n");
  const out = [];
  let replacedName = false;
  let replacedMain = false;
  for (const line of lines) {
    if (!replacedName && /^name\s*=/.test(line)) {
      out.push(`name = "${TEST_WORKER_NAME}"`);
      replacedName = true;
    } else if (!replacedMain && /^main\s*=/.test(line)) {
      out.push(`main = "${MODULE_ROOT}/harness.py"`);
      out.push(`rules = [{ type = "Data", globs = ${JSON.stringify(DATA_GLOBS)}, fallthrough = true }]`);
      replacedMain = true;
    } else {
      out.push(line.replace(/^migrations_dir\s*=.*$/, `migrations_dir = "${path.join(ROOT, "migrations")}"`));
    }
  }
  if (!replacedName || !replacedMain) throw new UserError("wrangler.toml has no top-level name/main to rewrite");
  return out.join("\n") + "\n";
}

export const TESTED_MANIFEST = path.join(ROOT, ".cache", "tested-bundle.manifest");

function filesUnder(dir, keep) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    const full = path.join(entry.parentPath ?? entry.path, entry.name);
    if (entry.isFile() && keep(full)) out.push(path.relative(dir, full).split(path.sep).join("/"));
  }
  return out;
}

// The Worker's part of the test Worker, hashed from the copies workerd loads, named
// as wrangler names deployed modules (tooling/deploy.py compares its dry run with it):
// src/**/*.py and every python_modules/ file but bytecode.
function workerManifest(moduleRoot, vendored) {
  const sha = (file) => crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex");
  const lines = [];
  for (const name of filesUnder(path.join(ROOT, "src"), (f) => f.endsWith(".py") && !f.includes("__pycache__"))) {
    lines.push([name, sha(path.join(moduleRoot, name))]);
  }
  for (const name of filesUnder(path.join(ROOT, "python_modules"), (f) => !f.endsWith(".pyc"))) {
    lines.push([`python_modules/${name}`, sha(path.join(vendored, name))]);
  }
  lines.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return lines.map(([name, digest]) => `${digest}  ${name}\n`).join("");
}

/** secrets: written to the test Worker's .dev.vars (multi-line PEMs included); extraToml: appended
 * to its wrangler.toml (top-level tables only, e.g. the bench's service bindings). */
export function assembleTestWorker({ secrets, dir, extraToml = "" }) {
  for (const need of [path.join(ROOT, "python_modules", "workers"), TEST_DEPS_DIR]) {
    if (!fs.existsSync(need)) throw new UserError(`${path.relative(ROOT, need)} is missing: run \`make install\``);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  const moduleRoot = path.join(dir, MODULE_ROOT);
  copyTree(path.join(ROOT, "src"), moduleRoot);
  copyTree(path.join(ROOT, "tests"), path.join(moduleRoot, "tests"));
  copyTree(path.join(ROOT, "bench"), path.join(moduleRoot, "bench"), (src) => !src.includes(`${path.sep}results`));
  copyTree(path.join(ROOT, "runtime", "testworker"), moduleRoot);
  const vendored = path.join(dir, "python_modules");
  copyTree(path.join(ROOT, "python_modules"), vendored);
  copyTree(TEST_DEPS_DIR, vendored, (src) => !src.includes(`${path.sep}bin${path.sep}`));
  fs.writeFileSync(
    path.join(dir, "wrangler.toml"),
    testWorkerConfig(fs.readFileSync(path.join(ROOT, "wrangler.toml"), "utf8")) + extraToml,
  );
  const devVars = Object.entries(secrets).map(([k, v]) => `${k}=${JSON.stringify(String(v))}`);
  fs.writeFileSync(path.join(dir, ".dev.vars"), devVars.join("\n") + "\n", { mode: 0o600 });
  return { config: path.join(dir, "wrangler.toml"), manifest: workerManifest(moduleRoot, vendored) };
}
