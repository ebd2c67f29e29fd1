// Paths and small helpers shared by the local tooling (no Worker code runs here).
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const WRANGLER_JS = path.join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");

export class UserError extends Error {}

// Per-environment local state, so local/staging/production never share D1 rows.
export function stateDir(envName) {
  return path.join(ROOT, ".wrangler", "state-" + (envName || "local"));
}

export function databaseName(envName) {
  return envName ? `clairvora-db-${envName}` : "clairvora-db";
}

export function readWranglerVars(wrangler, envName, configPath = path.join(ROOT, "wrangler.toml")) {
  const config = wrangler.unstable_readConfig({ config: configPath, env: envName || undefined });
  return { vars: { ...(config.vars ?? {}) }, config };
}

export function wrangler(args, { quiet = true } = {}) {
  const result = spawnSync(process.execPath, [WRANGLER_JS, ...args], {
    cwd: ROOT,
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" },
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  if (result.status !== 0) {
    throw new UserError(`wrangler ${args.join(" ")} failed:\n${result.stdout}\n${result.stderr}`);
  }
  if (!quiet) process.stderr.write(result.stdout);
  return result.stdout;
}
