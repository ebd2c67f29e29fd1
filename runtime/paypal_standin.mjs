// A local stand-in for the PayPal REST API's Payouts part (node:http on 127.0.0.1,
// ephemeral port), speaking its JSON shapes (docs/PAYPAL.md has each fact and its source):
//   POST /v1/oauth2/token                HTTP Basic client_id:secret, form grant_type=client_credentials
//                                        -> {scope, access_token, token_type "Bearer", app_id, expires_in, nonce};
//                                        bad credentials 401 {error "invalid_client", error_description}
//   POST /v1/payments/payouts            Bearer; 201 {batch_header{payout_batch_id, batch_status "PENDING",
//                                        sender_batch_header}, links}; a sender_batch_id seen in the last 30 days
//                                        400 {name "USER_BUSINESS_ERROR", message "User business error.", debug_id,
//                                        information_link, details[{field "SENDER_BATCH_ID", issue "Batch with given
//                                        sender_batch_id already exists", link[{href <the original>, rel "self",
//                                        method "GET"}]}]}; a bad body 400 VALIDATION_ERROR with details
//   GET  /v1/payments/payouts/{id}       the batch with its items (transaction_status, payout_item, errors)
//   POST /v1/notifications/verify-webhook-signature
//                                        {auth_algo, cert_url, transmission_id, transmission_sig,
//                                        transmission_time, webhook_id, webhook_event} -> {verification_status
//                                        "SUCCESS" | "FAILURE"}; checks the RSA signature it made
//   an unknown or expired Bearer token is 401 {error "invalid_token", error_description}.
//
// Items are processed just after the 201 (PENDING first, as PayPal answers), then one
// PAYMENT.PAYOUTS-ITEM.* webhook per item, signed the way PayPal signs: SHA256withRSA over
// `transmission_id|transmission_time|webhook_id|crc32(body)` (crc32 as an unsigned decimal),
// headers PAYPAL-TRANSMISSION-ID/-TIME/-SIG (base64), PAYPAL-CERT-URL, PAYPAL-AUTH-ALGO. With a
// `webhookUrl` (make dev) it POSTs them there and retries a refused delivery a few times;
// without one (the tests) it queues them for takeWebhooks().
//
// Test receivers (EMAIL), by a tag in the local part: `+fail` -> item FAILED,
// `+unclaimed` -> UNCLAIMED (RECEIVER_UNREGISTERED), `+invalid` -> the create is refused
// 400 VALIDATION_ERROR, `+timeout` -> the batch is made but the create's answer never comes.
// Anything else succeeds. Controls: nextCreate("hang" | "drop" | "error500"), returnItem(),
// revokeTokens(), signEvent(), received().
//
// Not imitated: PayPal does not publish its certificate endpoint's behaviour for other hosts;
// the stand-in serves no certificate (the Worker never downloads one: it verifies by postback).
import crypto from "node:crypto";
import http from "node:http";
import zlib from "node:zlib";

const MAX_BODY_BYTES = 256 * 1024;
const TOKEN_LIFE_S = 32400;
const DUPLICATE_WINDOW_MS = 30 * 86400 * 1000;
const DELIVERY_RETRIES = 5;
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

export function crc32(buffer) {
  if (typeof zlib.crc32 === "function") return zlib.crc32(buffer) >>> 0;
  let c = 0xffffffff;
  for (const byte of buffer) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const randomId = (n = 13) => {
  const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  return Array.from(crypto.randomBytes(n), (b) => alphabet[b % alphabet.length]).join("");
};
const iso = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
const TAG = /\+(fail|unclaimed|invalid|timeout)@/;

function json(res, status, body, headers = {}) {
  const text = body === undefined ? "" : JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "paypal-debug-id": randomId(13).toLowerCase(),
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function paypalError(name, message, details, extra = {}) {
  return {
    name,
    message,
    debug_id: randomId(13).toLowerCase(),
    information_link: "https://developer.paypal.com/docs/api/payments.payouts-batch/#errors",
    ...(details ? { details } : {}),
    ...extra,
  };
}

export async function startPaypalStandin({ clientId, clientSecret, webhookId, webhookUrl = null, log = () => {} }) {
  const { publicKey, privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const certId = `CERT-360caa42-fca2a594-${crypto.randomBytes(4).toString("hex")}`;
  const tokens = new Map(); // access token -> expiry (ms)
  const batches = new Map(); // payout_batch_id -> batch
  const bySender = new Map(); // sender_batch_id -> {batchId, atMs}
  const queued = []; // webhook deliveries not sent (no webhookUrl)
  const deliveries = []; // {eventType, status} of deliveries made to webhookUrl
  const received = []; // {method, path, body}, newest last
  const hanging = new Set();
  const counts = { tokens: 0, creates: 0, lookups: 0, verifications: 0 };
  let nextCreateMode = null;
  let base = "";

  const link = (href, rel) => ({ href, rel, method: "GET", encType: "application/json" });

  function sign(bodyText, transmissionId, transmissionTime) {
    const message = `${transmissionId}|${transmissionTime}|${webhookId}|${crc32(Buffer.from(bodyText, "utf8"))}`;
    return crypto.sign("sha256", Buffer.from(message, "utf8"), privateKey).toString("base64");
  }

  function signed(event) {
    const body = JSON.stringify(event);
    const id = crypto.randomUUID();
    const time = iso(Date.now());
    return {
      body,
      headers: {
        "content-type": "application/json",
        "paypal-transmission-id": id,
        "paypal-transmission-time": time,
        "paypal-transmission-sig": sign(body, id, time),
        "paypal-cert-url": `${base}/v1/notifications/certs/${certId}`,
        "paypal-auth-algo": "SHA256withRSA",
      },
    };
  }

  function itemView(batch, item) {
    const out = {
      payout_item_id: item.payoutItemId,
      transaction_id: item.transactionId,
      activity_id: item.activityId,
      transaction_status: item.status,
      payout_item_fee: { currency: "USD", value: "0.25" },
      payout_batch_id: batch.id,
      payout_item: item.request,
      time_processed: iso(item.processedMs ?? batch.createdMs),
      links: [link(`${base}/v1/payments/payouts-item/${item.payoutItemId}`, "item")],
    };
    if (item.error) out.errors = { ...item.error, information_link: "https://developer.paypal.com/docs/api/payments.payouts-batch/#errors", details: [] };
    return out;
  }

  function batchView(batch) {
    const total = batch.items.reduce((sum, i) => sum + Math.round(Number(i.request.amount.value) * 100), 0);
    return {
      total_items: batch.items.length,
      total_pages: 1,
      batch_header: {
        payout_batch_id: batch.id,
        batch_status: batch.status,
        time_created: iso(batch.createdMs),
        ...(batch.status === "SUCCESS" || batch.status === "DENIED" ? { time_completed: iso(batch.createdMs) } : {}),
        sender_batch_header: batch.senderHeader,
        funding_source: "BALANCE",
        amount: { currency: "USD", value: (total / 100).toFixed(2) },
        fees: { currency: "USD", value: (0.25 * batch.items.length).toFixed(2) },
      },
      items: batch.items.map((i) => itemView(batch, i)),
      links: [link(`${base}/v1/payments/payouts/${batch.id}?page_size=1000&page=1`, "self")],
    };
  }

  const EVENT_OF_STATUS = {
    SUCCESS: ["PAYMENT.PAYOUTS-ITEM.SUCCEEDED", "A payout item has succeeded"],
    FAILED: ["PAYMENT.PAYOUTS-ITEM.FAILED", "A payout item has failed"],
    UNCLAIMED: ["PAYMENT.PAYOUTS-ITEM.UNCLAIMED", "A payout item is unclaimed"],
    RETURNED: ["PAYMENT.PAYOUTS-ITEM.RETURNED", "A payout item has been returned"],
  };

  function eventFor(batch, item) {
    const [eventType, summary] = EVENT_OF_STATUS[item.status];
    const id = `WH-${randomId(17)}-${randomId(17)}`;
    return {
      id,
      event_version: "1.0",
      create_time: iso(Date.now()),
      resource_type: "payouts_item",
      event_type: eventType,
      summary,
      resource: { ...itemView(batch, item), sender_batch_id: batch.senderHeader.sender_batch_id },
      links: [link(`${base}/v1/notifications/webhooks-events/${id}`, "self")],
    };
  }

  async function deliver(delivery, eventType) {
    for (let attempt = 0; attempt < DELIVERY_RETRIES; attempt++) {
      try {
        const r = await fetch(webhookUrl, { method: "POST", headers: delivery.headers, body: delivery.body });
        await r.arrayBuffer();
        deliveries.push({ eventType, status: r.status });
        if (r.ok) return;
      } catch (error) {
        deliveries.push({ eventType, status: String(error.message ?? error) });
      }
      await new Promise((resolve) => setTimeout(resolve, 1000 * 2 ** attempt));
    }
    log(`PayPal stand-in: gave up delivering ${eventType}`);
  }

  function notify(batch, item) {
    const delivery = signed(eventFor(batch, item));
    if (webhookUrl) deliver(delivery, EVENT_OF_STATUS[item.status][0]);
    else queued.push(delivery);
  }

  function processBatch(batch) {
    for (const item of batch.items) {
      const tag = String(item.request.receiver).match(TAG)?.[1];
      item.processedMs = Date.now();
      if (tag === "fail") {
        item.status = "FAILED";
        item.error = { name: "RECEIVER_ACCOUNT_LOCKED", message: "Receiver account is locked or inactive" };
      } else if (tag === "unclaimed") {
        item.status = "UNCLAIMED";
        item.error = { name: "RECEIVER_UNREGISTERED", message: "Receiver is unregistered" };
      } else {
        item.status = "SUCCESS";
        item.transactionId = randomId(17);
      }
      notify(batch, item);
    }
    batch.status = batch.items.every((i) => i.status === "FAILED") ? "DENIED" : "SUCCESS";
  }

  function validationDetails(body) {
    const details = [];
    const header = body?.sender_batch_header;
    if (!header || typeof header !== "object") details.push({ field: "sender_batch_header", location: "body", issue: "Required field is missing" });
    const items = Array.isArray(body?.items) ? body.items : [];
    if (items.length === 0) details.push({ field: "items", location: "body", issue: "Required field is missing" });
    items.forEach((item, n) => {
      const type = item?.recipient_type ?? header?.recipient_type;
      if (!["EMAIL", "PHONE", "PAYPAL_ID"].includes(type)) {
        details.push({ field: `items[${n}].recipient_type`, location: "body", issue: "Value is invalid (must be EMAILor PAYPAL_ID or PHONE)" });
      }
      const value = item?.amount?.value;
      if (typeof value !== "string" || !/^\d{1,10}(\.\d{1,2})?$/.test(value) || Number(value) <= 0 || item?.amount?.currency !== "USD") {
        details.push({ field: `items[${n}].amount`, location: "body", issue: "Currency amount must be a string with up to two decimal places" });
      }
      const receiver = String(item?.receiver ?? "");
      const badEmail = type === "EMAIL" && !/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(receiver);
      const badId = type === "PAYPAL_ID" && !/^[A-Z0-9]{13}$/.test(receiver);
      if (!receiver || badEmail || badId || TAG.exec(receiver)?.[1] === "invalid") {
        details.push({ field: `items[${n}].receiver`, location: "body", issue: "Receiver is invalid or does not match with type" });
      }
    });
    return details;
  }

  function createBatch(req, res, body) {
    counts.creates += 1;
    const details = validationDetails(body);
    if (details.length) return json(res, 400, paypalError("VALIDATION_ERROR", "Invalid request - see details.", details, { links: [] }));
    const senderId = String(body.sender_batch_header.sender_batch_id ?? "");
    const seen = senderId ? bySender.get(senderId) : undefined;
    if (seen && Date.now() - seen.atMs < DUPLICATE_WINDOW_MS) {
      return json(res, 400, paypalError("USER_BUSINESS_ERROR", "User business error.", [{
        field: "SENDER_BATCH_ID",
        location: "body",
        issue: "Batch with given sender_batch_id already exists",
        link: [{ href: `${base}/v1/payments/payouts/${seen.batchId}`, rel: "self", method: "GET" }],
      }], { links: [] }));
    }
    const mode = nextCreateMode;
    nextCreateMode = null;
    if (mode === "error500") return json(res, 500, paypalError("INTERNAL_SERVER_ERROR", "An internal server error has occurred."));
    if (mode === "drop") return hang(res);
    const batch = {
      id: randomId(13),
      status: "PENDING",
      createdMs: Date.now(),
      senderHeader: { sender_batch_id: senderId, email_subject: body.sender_batch_header.email_subject ?? "" },
      items: body.items.map((item) => ({
        payoutItemId: randomId(13),
        activityId: randomId(17),
        status: "PENDING",
        request: {
          recipient_type: item.recipient_type ?? body.sender_batch_header.recipient_type,
          amount: { currency: item.amount.currency, value: item.amount.value },
          note: item.note ?? "",
          receiver: item.receiver,
          sender_item_id: item.sender_item_id ?? "",
        },
      })),
    };
    batches.set(batch.id, batch);
    if (senderId) bySender.set(senderId, { batchId: batch.id, atMs: Date.now() });
    setImmediate(() => processBatch(batch));
    const receiverTimeout = body.items.some((i) => TAG.exec(String(i.receiver))?.[1] === "timeout");
    if (mode === "hang" || receiverTimeout) return hang(res);
    json(res, 201, {
      batch_header: { payout_batch_id: batch.id, batch_status: "PENDING", sender_batch_header: batch.senderHeader },
      links: [link(`${base}/v1/payments/payouts/${batch.id}`, "self")],
    });
  }

  function hang(res) {
    hanging.add(res);
    res.on("close", () => hanging.delete(res));
  }

  function verify(res, body) {
    counts.verifications += 1;
    const required = ["auth_algo", "cert_url", "transmission_id", "transmission_sig", "transmission_time", "webhook_id", "webhook_event"];
    const missing = required.filter((k) => body?.[k] === undefined || body[k] === "");
    if (missing.length) {
      return json(res, 400, paypalError("VALIDATION_ERROR", "Invalid request - see details.",
        missing.map((field) => ({ field, location: "body", issue: "MISSING_REQUIRED_PARAMETER" }))));
    }
    const ours = body.webhook_id === webhookId && body.auth_algo === "SHA256withRSA" &&
      body.cert_url === `${base}/v1/notifications/certs/${certId}`;
    const message = `${body.transmission_id}|${body.transmission_time}|${body.webhook_id}|${crc32(Buffer.from(JSON.stringify(body.webhook_event), "utf8"))}`;
    let good = false;
    try {
      good = ours && crypto.verify("sha256", Buffer.from(message, "utf8"), publicKey, Buffer.from(String(body.transmission_sig), "base64"));
    } catch {
      good = false;
    }
    json(res, 200, { verification_status: good ? "SUCCESS" : "FAILURE" });
  }

  function issueToken(req, res, text) {
    counts.tokens += 1;
    const expected = "Basic " + Buffer.from(`${clientId}:${clientSecret}`).toString("base64");
    if (req.headers.authorization !== expected) {
      return json(res, 401, { error: "invalid_client", error_description: "Client Authentication failed" });
    }
    if (new URLSearchParams(text).get("grant_type") !== "client_credentials") {
      return json(res, 400, { error: "unsupported_grant_type", error_description: "Grant Type is NULL" });
    }
    const token = `A21AA${crypto.randomBytes(32).toString("base64url")}`;
    tokens.set(token, Date.now() + TOKEN_LIFE_S * 1000);
    json(res, 200, {
      scope: "https://uri.paypal.com/services/payments/payouts https://uri.paypal.com/services/applications/webhooks",
      access_token: token,
      token_type: "Bearer",
      app_id: "APP-80W284485P519543T",
      expires_in: TOKEN_LIFE_S,
      nonce: `${iso(Date.now())}${crypto.randomBytes(16).toString("base64url")}`,
    });
  }

  const server = http.createServer((req, res) => {
    const chunks = [];
    let size = 0;
    req.on("data", (c) => {
      size += c.length;
      if (size <= MAX_BODY_BYTES) chunks.push(c);
    });
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const path = req.url.split("?")[0];
      received.push({ method: req.method, path, body: text });
      if (received.length > 1000) received.shift();
      if (size > MAX_BODY_BYTES) return json(res, 413, paypalError("VALIDATION_ERROR", "Request is too large."));
      if (req.method === "POST" && path === "/v1/oauth2/token") return issueToken(req, res, text);
      const bearer = (req.headers.authorization ?? "").replace(/^Bearer /, "");
      if (!(tokens.get(bearer) > Date.now())) {
        return json(res, 401, { error: "invalid_token", error_description: "Token signature verification failed" });
      }
      let body = null;
      if (req.method === "POST") {
        try {
          body = JSON.parse(text);
        } catch {
          return json(res, 400, paypalError("MALFORMED_REQUEST", "Incoming JSON request does not map to API request"));
        }
      }
      if (req.method === "POST" && path === "/v1/payments/payouts") return createBatch(req, res, body);
      if (req.method === "POST" && path === "/v1/notifications/verify-webhook-signature") return verify(res, body);
      const lookup = path.match(/^\/v1\/payments\/payouts\/([A-Za-z0-9]+)$/);
      if (req.method === "GET" && lookup) {
        counts.lookups += 1;
        const batch = batches.get(lookup[1]);
        if (!batch) return json(res, 404, paypalError("INVALID_RESOURCE_ID", "The requested resource ID was not found"));
        return json(res, 200, batchView(batch));
      }
      json(res, 404, paypalError("NOT_FOUND", "The specified resource does not exist."));
    });
  });
  // workerd pools connections: an idle one Node closed would fail the Worker's next call.
  server.keepAliveTimeout = 0;
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${server.address().port}`;
  log(`PayPal Payouts stand-in on ${base}${webhookUrl ? ` (webhooks to ${webhookUrl})` : ""}`);

  return {
    endpoint: base,
    control: {
      // Signed webhook deliveries not yet taken ({headers, body}), oldest first.
      takeWebhooks() {
        return queued.splice(0, queued.length);
      },
      // A crafted event, signed as PayPal signs (tests of unknown payouts, tampering, replays).
      signEvent(event) {
        return signed(event);
      },
      // The next create call: "hang" (batch made, answer never sent), "drop" (nothing made,
      // no answer), "error500" (nothing made, 500).
      nextCreate(mode) {
        nextCreateMode = mode;
      },
      // PayPal returns an item (e.g. unclaimed for 30 days, or a reversal after success).
      returnItem(senderBatchId) {
        const seen = bySender.get(String(senderBatchId));
        const batch = seen && batches.get(seen.batchId);
        if (!batch) return false;
        for (const item of batch.items) {
          item.status = "RETURNED";
          item.processedMs = Date.now();
          notify(batch, item);
        }
        return true;
      },
      revokeTokens() {
        tokens.clear();
      },
      counts() {
        return { ...counts, queued: queued.length, deliveries: [...deliveries] };
      },
      received(pathPrefix) {
        return received.filter((r) => !pathPrefix || r.path.startsWith(pathPrefix));
      },
    },
    async stop() {
      for (const res of hanging) res.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
