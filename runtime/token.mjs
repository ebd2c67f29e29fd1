#!/usr/bin/env node
// `make token USER=<name> [ROLE=admin] [ENV=staging|production]`: print one
// bearer token the local server accepts, signed like a Clerk session token
// (RS256) with the development key from `make dev`, carrying the issuer and
// authorized party of that environment's configuration. ROLE=admin also makes
// that user an admin in that environment's local D1. TTL_S sets the lifetime
// (default one hour; Clerk's own is 60 s).
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { ROOT, readWranglerVars, stateDir } from "./common.mjs";

const [user, role = "", envName = ""] = process.argv.slice(2);
if (!["", "staging", "production"].includes(envName)) {
  console.error("ENV may be staging or production (or nothing for the top-level configuration)");
  process.exit(2);
}
if (!user || !/^[A-Za-z0-9_-]{1,40}$/.test(user)) {
  console.error("usage: make token USER=<name: letters, digits, _ or -> [ROLE=admin]");
  process.exit(2);
}
if (role && role !== "admin") {
  console.error("ROLE may only be admin (advisor is a profile: POST /v1/advisors)");
  process.exit(2);
}
const keyPath = path.join(ROOT, ".dev", "clerk-dev-private.pem");
if (!fs.existsSync(keyPath)) {
  console.error("no development key: run `make dev` once first");
  process.exit(1);
}
const wranglerBin = path.join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
process.env.WRANGLER_SEND_METRICS = "false";
const { vars } = readWranglerVars(await import("wrangler"), envName);
const issuer = vars.CLERK_ISSUER;
const azp = String(vars.CLERK_AUTHORIZED_PARTIES).split(",")[0].trim();
const database = envName ? `clairvora-db-${envName}` : "clairvora-db";

const sub = `user_${user}`;
const now = Math.floor(Date.now() / 1000);
const ttl = Number(process.env.TTL_S || 3600);
const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
const header = { alg: "RS256", kid: "ins_localdev", typ: "JWT" };
const claims = { azp, exp: now + ttl, iat: now, iss: issuer, nbf: now - 5, sid: `sess_${user}`, sub, v: 2 };
const signingInput = `${b64url(header)}.${b64url(claims)}`;
const signature = crypto.sign("sha256", Buffer.from(signingInput), fs.readFileSync(keyPath, "utf8"));

if (role === "admin") {
  // Create the user (with its wallet) if needed and grant admin, in local D1.
  const id = 1_099_511_627_776 + crypto.randomInt(0, 2 ** 47);
  const sql = `INSERT INTO users (id, clerk_user_id, is_admin, created_at_ms, updated_at_ms)
    VALUES (${id}, '${sub}', 1, ${now * 1000}, ${now * 1000})
    ON CONFLICT (clerk_user_id) DO UPDATE SET is_admin = 1;
    INSERT INTO accounts (id, kind, owner_user_id, created_at_ms)
    SELECT ${id + 1}, 'client_wallet', id, ${now * 1000} FROM users WHERE clerk_user_id = '${sub}'
    ON CONFLICT DO NOTHING;`;
  const envFlag = envName ? ["--env", envName] : [];
  const r = spawnSync(process.execPath, [wranglerBin, "d1", "execute", database, "--local", ...envFlag,
    "--persist-to", stateDir(envName), "--command", sql], { cwd: ROOT, encoding: "utf8" });
  if (r.status !== 0) {
    console.error(`could not grant admin in local D1 (run \`make dev${envName ? " ENV=" + envName : ""}\` once first):\n${r.stderr}`);
    process.exit(1);
  }
}
console.log(`${signingInput}.${signature.toString("base64url")}`);
