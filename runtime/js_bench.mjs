// The JavaScript Worker of bench/pyjs.py (bench/js_worker/worker.mjs), served by the same
// `wrangler dev` as the test Worker (`cli.mjs run --js-worker`): one workerd, one local D1.
//
// Its wrangler config is written at bench time from the project's own (wrangler.toml): the
// same compatibility date, vars (with the run's overrides), D1 binding (same database id, so
// the same local database under the same --persist-to) and rate-limit bindings. The test
// Worker gets two service bindings, JS_BENCH (this Worker) and PY_BENCH (itself), so the
// bench reaches both Workers the same way: a service-binding fetch on the same workerd.
import fs from "node:fs";
import path from "node:path";
import { ROOT, UserError, readWranglerVars } from "./common.mjs";

export const JS_WORKER_NAME = "clairvora-js-bench";
const JS_MAIN = path.join(ROOT, "bench", "js_worker", "worker.mjs");

const q = (value) => JSON.stringify(String(value)); // a TOML basic string

/** Service bindings for the test Worker's config (it is named clairvora-tests). */
export function benchBindingsToml(testWorkerName) {
  return [
    "",
    "# bench/pyjs.py: both Workers through a service binding (runtime/js_bench.mjs)",
    "[[services]]",
    'binding = "JS_BENCH"',
    `service = ${q(JS_WORKER_NAME)}`,
    "[[services]]",
    'binding = "PY_BENCH"',
    `service = ${q(testWorkerName)}`,
    "",
  ].join("\n");
}

/** Writes dir/wrangler.toml (+ .dev.vars with the token key) and returns the config's path. */
export async function writeJsWorker({ dir, vars, clerkJwtKey }) {
  if (!fs.existsSync(JS_MAIN)) throw new UserError(`${path.relative(ROOT, JS_MAIN)} is missing`);
  const { vars: projectVars, config } = readWranglerVars(await import("wrangler"), "");
  const [d1] = config.d1_databases ?? [];
  if (!d1) throw new UserError("wrangler.toml has no top-level D1 binding for the JavaScript bench Worker");
  const lines = [
    `name = ${q(JS_WORKER_NAME)}`,
    `main = ${q(JS_MAIN)}`,
    `compatibility_date = ${q(config.compatibility_date)}`,
    "",
    "[vars]",
    ...Object.entries({ ...projectVars, ...vars }).map(([k, v]) => `${k} = ${q(v)}`),
    "",
    "[[d1_databases]]",
    `binding = ${q(d1.binding)}`,
    `database_name = ${q(d1.database_name)}`,
    `database_id = ${q(d1.database_id)}`,
  ];
  for (const rl of config.ratelimits ?? []) {
    lines.push("", "[[ratelimits]]", `name = ${q(rl.name)}`, `namespace_id = ${q(rl.namespace_id)}`);
    lines.push(`simple = { limit = ${Number(rl.simple.limit)}, period = ${Number(rl.simple.period)} }`);
  }
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "wrangler.toml");
  fs.writeFileSync(file, lines.join("\n") + "\n");
  fs.writeFileSync(path.join(dir, ".dev.vars"), `CLERK_JWT_KEY=${JSON.stringify(String(clerkJwtKey))}\n`, { mode: 0o600 });
  return file;
}
