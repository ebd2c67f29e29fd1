#!/usr/bin/env node
// One-time local set-up for `make dev`: a development Clerk key pair (the
// private half stays in .dev/, never committed) and .dev.vars with the secrets
// the Worker reads. Existing values are kept.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { ROOT } from "./common.mjs";

const devDir = path.join(ROOT, ".dev");
const privatePath = path.join(devDir, "clerk-dev-private.pem");
const varsPath = path.join(ROOT, ".dev.vars");

function parseVars(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const m = line.match(/^([A-Z0-9_]+)=(.*)$/);
    if (m) out[m[1]] = m[2].replace(/^"|"$/g, "");
  }
  return out;
}

// Existing values are kept; a name the example gained since (a new secret) is added.
const vars = {
  ...parseVars(fs.readFileSync(path.join(ROOT, ".dev.vars.example"), "utf8")),
  ...(fs.existsSync(varsPath) ? parseVars(fs.readFileSync(varsPath, "utf8")) : {}),
};

fs.mkdirSync(devDir, { recursive: true });
if (!fs.existsSync(privatePath) || !vars.CLERK_JWT_KEY?.includes("BEGIN PUBLIC KEY")) {
  const { publicKey, privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  fs.writeFileSync(privatePath, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
  vars.CLERK_JWT_KEY = publicKey.export({ type: "spki", format: "pem" }).trim().replaceAll("\n", "\\n");
  console.error("[setup] generated a development Clerk key pair (.dev/clerk-dev-private.pem)");
}
if (!vars.MESSAGE_KEYS || vars.MESSAGE_KEYS.startsWith("generated")) {
  vars.MESSAGE_KEYS = `1:${crypto.randomBytes(32).toString("base64")}`;
}
if (!vars.PAYOUT_KEYS || vars.PAYOUT_KEYS.startsWith("generated")) {
  vars.PAYOUT_KEYS = `1:${crypto.randomBytes(32).toString("base64")}`;
}
if (!vars.ANET_SIGNATURE_KEY || vars.ANET_SIGNATURE_KEY.startsWith("generated")) {
  vars.ANET_SIGNATURE_KEY = crypto.randomBytes(64).toString("hex").toUpperCase();
}
const lines = ["# Local secrets for `make dev` (git-ignored). See .dev.vars.example."];
for (const [k, v] of Object.entries(vars)) lines.push(`${k}="${v}"`);
fs.writeFileSync(varsPath, lines.join("\n") + "\n", { mode: 0o600 });
