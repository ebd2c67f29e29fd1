// A local stand-in for the Authorize.Net sandbox JSON API (node:http on
// 127.0.0.1, ephemeral port), speaking the real wire format, quirks included
// (see shared docs/third-parties.md sections 1-5):
//   - every JSON response starts with a UTF-8 BOM, HTTP 200 even on errors;
//   - no root wrapper: {transactionResponse?, refId?, messages:{resultCode, message:[{code,text}]}};
//   - responseCode is a STRING ("1" approved, "2" declined, "3" error, "4" held), transId "0" on error;
//   - keys are validated in XSD order (JSON is translated to XML): a key out of
//     order is E00003 with the schema validator's text;
//   - bad merchant credentials are E00007.
//
// Test tokens (payment.opaqueData.dataValue), `tok_<kind>[_<suffix>][.<nonce>]`:
//   kind approved | declined | held | error | timeout (held open, never answered)
//        | expired (E00115 "Expired OTS Token.")
//        | duplicate (the request reaches the gateway twice and the first copy's
//          answer is lost: the first copy is approved, this answer is the duplicate);
//   without `.<nonce>` a token is reusable (like Stripe's test tokens: the suite
//   uses them everywhere); WITH `.<nonce>` it is single-use like a real Accept.js
//   token: the first use is processed, every later use is E00114 "Invalid OTS
//   Token." with an empty transactionResponse. Anything else is E00114 too.
//
// Duplicate transactions, the real rule: a transaction whose API login, card,
// transaction type, amount, invoiceNumber, customer id, poNumber, billTo fields
// and duplicateWindow value all equal those of one processed within the window
// is refused: responseCode "3", error 11 "A duplicate transaction has been
// submitted.". The window is 120 s, or transactionSettings' `duplicateWindow`
// (0..28800 s; 0 turns the check off). Only when the request sends
// duplicateWindow does the answer carry the original's transId, AVS/CVV codes
// and (if it was approved) authCode; otherwise transId "0". Each kind of test
// token stands for its own test card (a suffix or nonce does not change the
// card), so the suite's deposits, which carry unique invoiceNumbers, are never
// duplicates of each other. The single-use check comes first: a used token no
// longer names a card, so it cannot be compared.
// It also signs webhook bodies the way Authorize.Net signs them (HMAC-SHA512 keyed
// with the signature key's ASCII characters, uppercase hex), for tests.
import crypto from "node:crypto";
import http from "node:http";

const BOM = "\uFEFF";
const NS = "AnetApi/xml/v1/schema/AnetApiSchema.xsd";
const MAX_BODY_BYTES = 64 * 1024;

// XSD element order (createTransactionRequest and transactionRequestType).
const ENVELOPE_ORDER = ["merchantAuthentication", "clientId", "refId", "transactionRequest"];
const TRANSACTION_ORDER = [
  "transactionType", "amount", "currencyCode", "payment", "profile", "solution", "callId", "terminalNumber",
  "authCode", "refTransId", "splitTenderId", "order", "lineItems", "tax", "duty", "shipping", "taxExempt",
  "poNumber", "customer", "billTo", "shipTo", "customerIP", "cardholderAuthentication", "retail", "employeeId",
  "transactionSettings", "userFields", "surcharge", "merchantDescriptor", "subMerchant", "tip",
  "processingOptions", "subsequentAuthInformation", "otherTax", "shipFrom", "authorizationIndicatorType",
];
const AUTH_ORDER = ["name", "transactionKey"];
const OPAQUE_ORDER = ["dataDescriptor", "dataValue", "dataKey"];
const ORDER_ORDER = ["invoiceNumber", "description"];
const CUSTOMER_ORDER = ["type", "id", "email"];
const SETTINGS_ORDER = ["setting"];
const SETTING_ORDER = ["settingName", "settingValue"];
const BILL_TO_ORDER = [
  "firstName", "lastName", "company", "address", "city", "state", "zip", "country", "phoneNumber", "faxNumber",
];
// Duplicate rule (Authorize.Net support, "Error 11"; SIM guide "Response for Duplicate Transactions").
const DEFAULT_DUPLICATE_WINDOW_S = 120;
const MAX_DUPLICATE_WINDOW_S = 28800;
const MAX_REMEMBERED = 20000; // processed transactions and used nonces kept (oldest dropped first)
const TOKEN = /^tok_(approved|declined|held|error|timeout|expired|duplicate)(?:_[A-Za-z0-9]*)?(\.[A-Za-z0-9_-]{1,64})?$/;

class SchemaError extends Error {}

// The text the real API gives for an element out of XSD order.
function checkOrder(element, obj, order) {
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    throw new SchemaError(`The element '${element}' in namespace '${NS}' has invalid content.`);
  }
  let last = -1;
  for (const key of Object.keys(obj)) {
    const at = order.indexOf(key);
    if (at <= last) {
      const expected = order.slice(last + 1).map((k) => `'${k}'`).join(", ");
      throw new SchemaError(
        `The element '${element}' in namespace '${NS}' has invalid child element '${key}' in namespace '${NS}'. ` +
          `List of possible elements expected: ${expected} in namespace '${NS}'.`,
      );
    }
    last = at;
  }
}

// The real answers' key order: transactionResponse, refId, messages.
function answerOf({ transactionResponse: tr, refId, messages: msgs }) {
  const out = {};
  if (tr !== undefined) out.transactionResponse = tr;
  if (refId !== undefined) out.refId = refId;
  out.messages = msgs;
  return out;
}

function reply(res, body) {
  const text = BOM + JSON.stringify(body);
  res.writeHead(200, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function messages(resultCode, code, text) {
  return { resultCode, message: [{ code, text }] };
}

function transactionResponse(responseCode, transId, extra) {
  return {
    responseCode,
    authCode: responseCode === "1" ? "QWE123" : "",
    avsResultCode: responseCode === "3" ? "P" : "Y",
    cvvResultCode: "",
    cavvResultCode: "",
    transId,
    refTransID: "",
    transHash: "",
    testRequest: "0",
    accountNumber: "XXXX1111",
    accountType: "Visa",
    ...extra,
    transHashSha2: "",
    SupplementalDataQualificationIndicator: 0,
  };
}

export async function startAnetStandin({ loginId, transactionKey, signatureKey, log = () => {} }) {
  const received = []; // parsed request bodies, newest last (tests inspect them)
  const hanging = new Set();
  const usedNonces = new Set(); // single-use tokens already used (insertion order = age)
  const processed = []; // {key, atMs, transId, responseCode, authCode, avsResultCode, cvvResultCode}, oldest first
  let clockOffsetMs = 0; // tests move the stand-in's clock forward instead of sleeping
  let nextTransId = 60000000000 + Math.floor(Math.random() * 1e9);
  const nowMs = () => Date.now() + clockOffsetMs;

  // The duplicateWindow setting: undefined when absent, else whole seconds (throws SchemaError when invalid).
  function duplicateWindowOf(tr) {
    const settings = tr.transactionSettings;
    if (settings === undefined) return undefined;
    checkOrder("transactionSettings", settings, SETTINGS_ORDER);
    // JSON -> XML: one element is an object, a repeated one an array.
    const list = settings.setting === undefined ? [] : [].concat(settings.setting);
    let window;
    for (const setting of list) {
      checkOrder("setting", setting, SETTING_ORDER);
      if (setting.settingName !== "duplicateWindow") continue;
      const value = String(setting.settingValue ?? "");
      // What the real API does with a value outside 0..28800 is UNCONFIRMED: the stand-in refuses it.
      if (!/^\d{1,5}$/.test(value) || Number(value) > MAX_DUPLICATE_WINDOW_S) {
        throw new SchemaError(`The 'duplicateWindow' setting value '${value}' is invalid: 0 to ${MAX_DUPLICATE_WINDOW_S}.`);
      }
      window = Number(value);
    }
    return window;
  }

  // The fields Authorize.Net compares to find a duplicate (the window value is one of them).
  function duplicateKey(tr, card, amount, windowS) {
    const billTo = tr.billTo ?? {};
    return JSON.stringify([
      loginId, card, tr.transactionType, amount, tr.order?.invoiceNumber ?? "", tr.customer?.id ?? "",
      tr.poNumber ?? "", ...BILL_TO_ORDER.slice(0, 8).map((k) => billTo[k] ?? ""), windowS ?? "",
    ]);
  }

  function findOriginal(key, windowS) {
    const since = nowMs() - windowS * 1000;
    for (let i = processed.length - 1; i >= 0 && processed[i].atMs > since; i--) {
      if (processed[i].key === key) return processed[i];
    }
    return undefined;
  }

  // Run a transaction through the "processor": it gets a transId and is remembered for the duplicate check.
  function process(kind, key) {
    const transId = String(nextTransId++);
    const responseCode = { approved: "1", duplicate: "1", declined: "2", held: "4" }[kind];
    const tr = transactionResponse(responseCode, transId, {});
    processed.push({
      key, atMs: nowMs(), transId, responseCode,
      authCode: tr.authCode, avsResultCode: tr.avsResultCode, cvvResultCode: tr.cvvResultCode,
    });
    if (processed.length > MAX_REMEMBERED) processed.shift();
    return { transId, responseCode };
  }

  function duplicateAnswer(original, windowS) {
    // Details of the original only when the request sent duplicateWindow (SIM guide).
    const details = windowS === undefined ? { transId: "0", authCode: "", avsResultCode: "P", cvvResultCode: "" } : {
      transId: original.transId,
      authCode: original.responseCode === "1" ? original.authCode : "",
      avsResultCode: original.avsResultCode,
      cvvResultCode: original.cvvResultCode,
    };
    const tr = transactionResponse("3", details.transId, {
      errors: [{ errorCode: "11", errorText: "A duplicate transaction has been submitted." }],
    });
    return {
      transactionResponse: { ...tr, ...details },
      messages: messages("Error", "E00027", "The transaction was unsuccessful."),
    };
  }

  function answer(body) {
    const env = body?.createTransactionRequest;
    if (!env) {
      const root = Object.keys(body ?? {})[0] ?? "";
      return answerOf({ messages: messages("Error", "E00003", `The element '${root}' is not a supported request.`) });
    }
    const refId = typeof env.refId === "string" ? env.refId : undefined;
    const withRef = (r) => answerOf({ ...r, refId });
    const schemaError = (e) => {
      if (e instanceof SchemaError) return withRef({ messages: messages("Error", "E00003", e.message) });
      throw e;
    };
    try {
      checkOrder("createTransactionRequest", env, ENVELOPE_ORDER);
      checkOrder("merchantAuthentication", env.merchantAuthentication, AUTH_ORDER);
    } catch (e) {
      return schemaError(e);
    }
    const auth = env.merchantAuthentication;
    if (auth.name !== loginId || auth.transactionKey !== transactionKey) {
      return withRef({ messages: messages("Error", "E00007", "User authentication failed due to invalid authentication values.") });
    }
    const tr = env.transactionRequest;
    let windowS;
    try {
      checkOrder("transactionRequest", tr, TRANSACTION_ORDER);
      if (tr.payment !== undefined) {
        checkOrder("payment", tr.payment, ["creditCard", "bankAccount", "trackData", "encryptedTrackData", "payPal", "opaqueData"]);
        if (tr.payment.opaqueData !== undefined) checkOrder("opaqueData", tr.payment.opaqueData, OPAQUE_ORDER);
      }
      if (tr.order !== undefined) checkOrder("order", tr.order, ORDER_ORDER);
      if (tr.customer !== undefined) checkOrder("customer", tr.customer, CUSTOMER_ORDER);
      if (tr.billTo !== undefined) checkOrder("billTo", tr.billTo, BILL_TO_ORDER);
      windowS = duplicateWindowOf(tr);
    } catch (e) {
      return schemaError(e);
    }
    if (tr.transactionType !== "authCaptureTransaction") {
      return withRef({ messages: messages("Error", "E00003", `The stand-in only knows authCaptureTransaction.`) });
    }
    const amount = typeof tr.amount === "string" ? tr.amount : String(tr.amount);
    if (!/^\d{1,13}(\.\d{1,2})?$/.test(amount) || Number(amount) <= 0) {
      return withRef({
        transactionResponse: transactionResponse("3", "0", { errors: [{ errorCode: "5", errorText: "A valid amount is required." }] }),
        messages: messages("Error", "E00027", "The transaction was unsuccessful."),
      });
    }
    const invoice = tr.order?.invoiceNumber;
    if (invoice !== undefined && (typeof invoice !== "string" || invoice.length > 20)) {
      return withRef({ messages: messages("Error", "E00003", `The 'invoiceNumber' element is invalid: the actual length is greater than the MaxLength value.`) });
    }

    // The token: unknown or already used -> E00114 (empty transactionResponse, as the real API answers).
    const token = String(tr.payment?.opaqueData?.dataValue ?? "");
    const [, kind, nonce] = token.match(TOKEN) ?? [];
    if (kind === undefined || (nonce !== undefined && usedNonces.has(token))) {
      return withRef({ transactionResponse: {}, messages: messages("Error", "E00114", "Invalid OTS Token.") });
    }
    if (kind === "expired") {
      return withRef({ transactionResponse: {}, messages: messages("Error", "E00115", "Expired OTS Token.") });
    }
    if (nonce !== undefined) {
      usedNonces.add(token);
      if (usedNonces.size > MAX_REMEMBERED) usedNonces.delete(usedNonces.values().next().value);
    }
    if (kind === "timeout") return "hang";
    if (kind === "error") {
      return withRef({
        transactionResponse: transactionResponse("3", "0", {
          errors: [{ errorCode: "57", errorText: "An error occurred in processing. Please try again in 5 minutes." }],
        }),
        messages: messages("Error", "E00027", "The transaction was unsuccessful."),
      });
    }

    // The duplicate check, then the processor.
    const key = duplicateKey(tr, kind, Number(amount).toFixed(2), windowS);
    const effectiveWindowS = windowS ?? DEFAULT_DUPLICATE_WINDOW_S;
    if (kind === "duplicate") process(kind, key); // the first copy, whose answer was lost
    const original = effectiveWindowS > 0 ? findOriginal(key, effectiveWindowS) : undefined;
    if (original !== undefined) return withRef(duplicateAnswer(original, windowS));
    const { transId } = process(kind, key);
    if (kind === "declined") {
      return withRef({
        transactionResponse: transactionResponse("2", transId, {
          errors: [{ errorCode: "2", errorText: "This transaction has been declined." }],
        }),
        messages: messages("Ok", "I00001", "Successful."),
      });
    }
    if (kind === "held") {
      return withRef({
        transactionResponse: transactionResponse("4", transId, {
          errors: [{ errorCode: "253", errorText: "The transaction was accepted and was authorized, but is being held for merchant review." }],
        }),
        messages: messages("Ok", "I00001", "Successful."),
      });
    }
    return withRef({
      transactionResponse: transactionResponse("1", transId, {
        messages: [{ code: "1", description: "This transaction has been approved." }],
      }),
      messages: messages("Ok", "I00001", "Successful."),
    });
  }

  const server = http.createServer((req, res) => {
    if (req.method !== "POST" || !req.url.startsWith("/xml/v1/request.api")) {
      res.writeHead(404).end();
      return;
    }
    const chunks = [];
    let size = 0;
    req.on("data", (c) => {
      size += c.length;
      if (size <= MAX_BODY_BYTES) chunks.push(c);
    });
    req.on("end", () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8").replace(/^\uFEFF/, ""));
      } catch {
        reply(res, answerOf({ messages: messages("Error", "E00003", "Root element is missing.") }));
        return;
      }
      received.push(body);
      if (received.length > 1000) received.shift();
      const out = answer(body);
      if (out === "hang") {
        hanging.add(res);
        res.on("close", () => hanging.delete(res));
        return;
      }
      reply(res, out);
    });
  });
  // workerd keeps connections pooled; Node would close an idle one after 5 s and the Worker's
  // next call on it would fail with "Network connection lost" (a local artefact, not the gateway's).
  server.keepAliveTimeout = 0;
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  const endpoint = `http://127.0.0.1:${port}/xml/v1/request.api`;
  log(`Authorize.Net stand-in on ${endpoint}`);

  return {
    endpoint,
    control: {
      endpoint,
      // JSON text of the requests received (all, or those whose invoiceNumber matches).
      received(invoiceNumber) {
        const all = invoiceNumber === undefined
          ? received
          : received.filter((b) => b?.createTransactionRequest?.transactionRequest?.order?.invoiceNumber === invoiceNumber);
        return JSON.stringify(all);
      },
      // Move the stand-in's clock forward (duplicate windows expire without sleeping).
      advanceClock(seconds) {
        clockOffsetMs += Number(seconds) * 1000;
      },
      // The exact raw request text is not kept; key order survives JSON.parse.
      // A webhook body signed like Authorize.Net signs it (compact JSON).
      signWebhook(bodyText, key = signatureKey) {
        return "sha512=" + crypto.createHmac("sha512", Buffer.from(key, "ascii")).update(bodyText, "utf8").digest("hex").toUpperCase();
      },
    },
    async stop() {
      for (const res of hanging) res.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
