// Local stand-ins for what cannot be reached offline, started beside the runtime.
// For tests: fresh secrets per run (a Clerk-style RSA key pair, message keys,
// an Authorize.Net signature key); for `make dev` they come from .dev.vars.
import crypto from "node:crypto";

function rsaKeyPair() {
  const { publicKey, privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  return {
    publicPem: publicKey.export({ type: "spki", format: "pem" }),
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }),
  };
}

export async function startServices({ log = () => {}, forTests = false } = {}) {
  const secrets = {};
  if (forTests) {
    const clerk = rsaKeyPair();
    secrets.CLERK_JWT_KEY = clerk.publicPem;
    secrets.CLERK_TEST_PRIVATE_KEY = clerk.privatePem;
    secrets.MESSAGE_KEYS = `1:${crypto.randomBytes(32).toString("base64")}`;
    secrets.ANET_SIGNATURE_KEY = crypto.randomBytes(64).toString("hex").toUpperCase();
    secrets.ANET_API_LOGIN_ID = "standin-login";
    secrets.ANET_TRANSACTION_KEY = "standinTxnKey123";
  }
  return {
    overrides() {
      const env = { ...secrets };
      delete env.CLERK_TEST_PRIVATE_KEY;
      return env;
    },
    testSecrets: () => ({ ...secrets }),
    anetControl: () => null,
    async stop() {},
  };
}
