// A local stand-in for the Authorize.Net sandbox JSON API (node:http on
// 127.0.0.1, ephemeral port), speaking the real wire format, quirks included
// (see shared docs/third-parties.md sections 1-5):
//   - every JSON response starts with a UTF-8 BOM, HTTP 200 even on errors;
//   - no root wrapper: {transactionResponse?, refId?, messages:{resultCode, message:[{code,text}]}};
//   - responseCode is a STRING ("1" approved, "2" declined, "3" error, "4" held), transId "0" on error;
//   - keys are validated in XSD order (JSON is translated to XML): a key out of
//     order is E00003 with the schema validator's text;
//   - bad merchant credentials are E00007.
// Test tokens (payment.opaqueData.dataValue; a suffix after the name is allowed,
// e.g. "tok_approved_42"): tok_approved, tok_declined, tok_held, tok_error,
// tok_timeout (the request is held open and never answered), anything else E00114.
// It also signs webhook bodies the way Authorize.Net does (HMAC-SHA512 keyed with
// the signature key's ASCII characters, uppercase hex), for tests.
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
  let nextTransId = 60000000000 + Math.floor(Math.random() * 1e9);

  function answer(body) {
    const env = body?.createTransactionRequest;
    if (!env) {
      const root = Object.keys(body ?? {})[0] ?? "";
      return { messages: messages("Error", "E00003", `The element '${root}' is not a supported request.`) };
    }
    const refId = typeof env.refId === "string" ? env.refId : undefined;
    const withRef = (r) => (refId === undefined ? r : { ...r, refId });
    try {
      checkOrder("createTransactionRequest", env, ENVELOPE_ORDER);
      checkOrder("merchantAuthentication", env.merchantAuthentication, AUTH_ORDER);
    } catch (e) {
      if (e instanceof SchemaError) return withRef({ messages: messages("Error", "E00003", e.message) });
      throw e;
    }
    const auth = env.merchantAuthentication;
    if (auth.name !== loginId || auth.transactionKey !== transactionKey) {
      return withRef({ messages: messages("Error", "E00007", "User authentication failed due to invalid authentication values.") });
    }
    const tr = env.transactionRequest;
    try {
      checkOrder("transactionRequest", tr, TRANSACTION_ORDER);
      if (tr.payment !== undefined) {
        checkOrder("payment", tr.payment, ["creditCard", "bankAccount", "trackData", "encryptedTrackData", "payPal", "opaqueData"]);
        if (tr.payment.opaqueData !== undefined) checkOrder("opaqueData", tr.payment.opaqueData, OPAQUE_ORDER);
      }
      if (tr.order !== undefined) checkOrder("order", tr.order, ORDER_ORDER);
      if (tr.customer !== undefined) checkOrder("customer", tr.customer, CUSTOMER_ORDER);
    } catch (e) {
      if (e instanceof SchemaError) return withRef({ messages: messages("Error", "E00003", e.message) });
      throw e;
    }
    if (tr.transactionType !== "authCaptureTransaction") {
      return withRef({ messages: messages("Error", "E00003", `The stand-in only knows authCaptureTransaction.`) });
    }
    const amount = typeof tr.amount === "string" ? tr.amount : String(tr.amount);
    if (!/^\d{1,13}(\.\d{1,2})?$/.test(amount) || Number(amount) <= 0) {
      return withRef({
        messages: messages("Error", "E00027", "The transaction was unsuccessful."),
        transactionResponse: transactionResponse("3", "0", { errors: [{ errorCode: "5", errorText: "A valid amount is required." }] }),
      });
    }
    const invoice = tr.order?.invoiceNumber;
    if (invoice !== undefined && (typeof invoice !== "string" || invoice.length > 20)) {
      return withRef({ messages: messages("Error", "E00003", `The 'invoiceNumber' element is invalid: the actual length is greater than the MaxLength value.`) });
    }
    const token = String(tr.payment?.opaqueData?.dataValue ?? "");
    const kind = (token.match(/^tok_(approved|declined|held|error|timeout)(?:_[A-Za-z0-9]*)?$/) ?? [])[1];
    if (kind === "timeout") return "hang";
    if (kind === undefined) {
      return withRef({
        messages: messages("Error", "E00114", "Invalid OTS Token."),
        transactionResponse: transactionResponse("3", "0", {}),
      });
    }
    if (kind === "error") {
      return withRef({
        messages: messages("Error", "E00027", "The transaction was unsuccessful."),
        transactionResponse: transactionResponse("3", "0", {
          errors: [{ errorCode: "57", errorText: "An error occurred in processing. Please try again in 5 minutes." }],
        }),
      });
    }
    const transId = String(nextTransId++);
    if (kind === "declined") {
      return withRef({
        messages: messages("Ok", "I00001", "Successful."),
        transactionResponse: transactionResponse("2", transId, {
          errors: [{ errorCode: "2", errorText: "This transaction has been declined." }],
        }),
      });
    }
    if (kind === "held") {
      return withRef({
        messages: messages("Ok", "I00001", "Successful."),
        transactionResponse: transactionResponse("4", transId, {
          errors: [{ errorCode: "253", errorText: "The transaction was accepted and was authorized, but is being held for merchant review." }],
        }),
      });
    }
    return withRef({
      messages: messages("Ok", "I00001", "Successful."),
      transactionResponse: transactionResponse("1", transId, {
        messages: [{ code: "1", description: "This transaction has been approved." }],
      }),
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
        reply(res, { messages: messages("Error", "E00003", "Root element is missing.") });
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
