// Assembles the test Worker in .cache/testworker/: the project's own src/
// (byte for byte), tests/, bench/ and the harness (runtime/testworker/), with
// python_modules/ = the project's vendored SDK (the same files that deploy
// ships) plus pytest, Hypothesis and their pure-Python dependencies. Its
// wrangler.toml is the project's, with another name and main: the same
// compatibility date and flags, vars, D1 database id and R2 bucket.
import fs from "node:fs";
import path from "node:path";
import { ROOT, UserError } from "./common.mjs";

export const TEST_WORKER_DIR = path.join(ROOT, ".cache", "testworker");
const TEST_DEPS_DIR = path.join(ROOT, ".cache", "python_modules-test");
const MODULE_ROOT = "root";
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
      out.push('name = "clairvora-tests"');
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

/** secrets: written to the test Worker's .dev.vars (multi-line PEMs included). */
export function assembleTestWorker({ secrets }) {
  for (const need of [path.join(ROOT, "python_modules", "workers"), TEST_DEPS_DIR]) {
    if (!fs.existsSync(need)) throw new UserError(`${path.relative(ROOT, need)} is missing: run \`make install\``);
  }
  fs.rmSync(TEST_WORKER_DIR, { recursive: true, force: true });
  const moduleRoot = path.join(TEST_WORKER_DIR, MODULE_ROOT);
  copyTree(path.join(ROOT, "src"), moduleRoot);
  copyTree(path.join(ROOT, "tests"), path.join(moduleRoot, "tests"));
  copyTree(path.join(ROOT, "bench"), path.join(moduleRoot, "bench"), (src) => !src.includes(`${path.sep}results`));
  copyTree(path.join(ROOT, "runtime", "testworker"), moduleRoot);
  const vendored = path.join(TEST_WORKER_DIR, "python_modules");
  copyTree(path.join(ROOT, "python_modules"), vendored);
  copyTree(TEST_DEPS_DIR, vendored, (src) => !src.includes(`${path.sep}bin${path.sep}`));
  fs.writeFileSync(
    path.join(TEST_WORKER_DIR, "wrangler.toml"),
    testWorkerConfig(fs.readFileSync(path.join(ROOT, "wrangler.toml"), "utf8")),
  );
  const devVars = Object.entries(secrets).map(([k, v]) => `${k}=${JSON.stringify(String(v))}`);
  fs.writeFileSync(path.join(TEST_WORKER_DIR, ".dev.vars"), devVars.join("\n") + "\n", { mode: 0o600 });
  return { config: path.join(TEST_WORKER_DIR, "wrangler.toml") };
}
