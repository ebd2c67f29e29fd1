// Local stand-ins for what cannot be reached offline, started beside the runtime:
// Authorize.Net and PayPal Payouts. For tests: fresh secrets per run (a Clerk-style
// RSA key pair, message and payout-receiver keys, an Authorize.Net signature key,
// PayPal client credentials and webhook id); for `make dev` they come from .dev.vars.
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { startAnetStandin } from "./anet_standin.mjs";
import { startPaypalStandin } from "./paypal_standin.mjs";
import { ROOT } from "./common.mjs";

function rsaKeyPair() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  return {
    publicPem: publicKey.export({ type: "spki", format: "pem" }),
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }),
  };
}

function devVars() {
  const file = path.join(ROOT, ".dev.vars");
  const out = {};
  if (!fs.existsSync(file)) return out;
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    const m = line.match(/^([A-Z0-9_]+)=(.*)$/);
    if (m) out[m[1]] = m[2].replace(/^"|"$/g, "");
  }
  return out;
}

// The developer points ANET_ENDPOINT at the real sandbox (process env or
// .dev.vars): then no stand-in. A loopback endpoint (the wrangler.toml
// placeholder) means "use the stand-in".
function realEndpoint(vars, name) {
  const configured = process.env[name] ?? vars[name];
  if (!configured) return null;
  try {
    const host = new URL(configured).hostname;
    return host === "127.0.0.1" || host === "localhost" ? null : configured;
  } catch {
    return null;
  }
}

// PayPal's webhook id is letters and digits (its verify API's pattern).
const STANDIN_WEBHOOK_ID = "8PT597110X687430LKGECATA";

// workerUrl (make dev): where the PayPal stand-in delivers its webhooks.
export async function startServices({ log = () => {}, forTests = false, envName = "", workerUrl = null } = {}) {
  const secrets = {};
  if (forTests) {
    const clerk = rsaKeyPair();
    secrets.CLERK_JWT_KEY = clerk.publicPem;
    secrets.CLERK_TEST_PRIVATE_KEY = clerk.privatePem;
    secrets.MESSAGE_KEYS = `1:${crypto.randomBytes(32).toString("base64")}`;
    secrets.ANET_SIGNATURE_KEY = crypto.randomBytes(64).toString("hex").toUpperCase();
    secrets.ANET_API_LOGIN_ID = "standin-login";
    secrets.ANET_TRANSACTION_KEY = "standinTxnKey123";
    secrets.PAYOUT_KEYS = `1:${crypto.randomBytes(32).toString("base64")}`;
    secrets.PAYPAL_CLIENT_ID = `standin-${crypto.randomBytes(8).toString("hex")}`;
    secrets.PAYPAL_CLIENT_SECRET = crypto.randomBytes(24).toString("base64url");
    secrets.PAYPAL_WEBHOOK_ID = STANDIN_WEBHOOK_ID;
  }
  // Authorize.Net: the local stand-in, unless a real endpoint is configured
  // (or a deployed environment's config, which names the real one, is served).
  let anet = null;
  const endpointOverrides = {};
  const vars = forTests ? {} : devVars();
  if (forTests || (!envName && realEndpoint(vars, "ANET_ENDPOINT") === null)) {
    anet = await startAnetStandin({
      loginId: forTests ? secrets.ANET_API_LOGIN_ID : (vars.ANET_API_LOGIN_ID ?? "standin-login"),
      transactionKey: forTests ? secrets.ANET_TRANSACTION_KEY : (vars.ANET_TRANSACTION_KEY ?? "standinTxnKey123"),
      signatureKey: forTests ? secrets.ANET_SIGNATURE_KEY : (vars.ANET_SIGNATURE_KEY ?? ""),
      // make dev: the port wrangler.toml's placeholder names (ANET_STANDIN_PORT to change); tests: any.
      port: forTests ? 0 : Number(process.env.ANET_STANDIN_PORT || 8788),
      log,
    });
    endpointOverrides.ANET_ENDPOINT = anet.endpoint;
    // tok_timeout must time out quickly in tests (a real timeout, not a sleep).
    if (forTests) endpointOverrides.ANET_TIMEOUT_MS = "2000";
  }
  // PayPal Payouts: the same rule (PAYPAL_ENDPOINT names the real sandbox to use it).
  let paypal = null;
  if (forTests || (!envName && realEndpoint(vars, "PAYPAL_ENDPOINT") === null)) {
    paypal = await startPaypalStandin({
      clientId: forTests ? secrets.PAYPAL_CLIENT_ID : (vars.PAYPAL_CLIENT_ID ?? "standin-client"),
      clientSecret: forTests ? secrets.PAYPAL_CLIENT_SECRET : (vars.PAYPAL_CLIENT_SECRET ?? "standin-secret"),
      webhookId: forTests ? secrets.PAYPAL_WEBHOOK_ID : (vars.PAYPAL_WEBHOOK_ID ?? STANDIN_WEBHOOK_ID),
      webhookUrl: forTests || !workerUrl ? null : `${workerUrl}/v1/webhooks/paypal`,
      log,
    });
    endpointOverrides.PAYPAL_ENDPOINT = paypal.endpoint;
    // A create that never answers must time out quickly in tests (a real timeout, not a sleep).
    if (forTests) endpointOverrides.PAYPAL_TIMEOUT_MS = "2000";
  }
  return {
    overrides() {
      const env = { ...secrets, ...endpointOverrides };
      delete env.CLERK_TEST_PRIVATE_KEY;
      return env;
    },
    testSecrets: () => ({ ...secrets }),
    anetControl: () => (anet ? anet.control : null),
    paypalControl: () => (paypal ? paypal.control : null),
    async stop() {
      if (anet) await anet.stop();
      if (paypal) await paypal.stop();
    },
  };
}
