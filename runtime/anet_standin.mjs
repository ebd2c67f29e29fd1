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
//
// Transaction Reporting (the "Transaction Details API"), the three calls a merchant
// can find its own transaction by invoiceNumber with (the API has no search by
// invoice; getTransactionListForCustomerRequest needs a CIM customer profile):
//   - getUnsettledTransactionListRequest{merchantAuthentication, refId?, status?
//     (any | pendingApproval), sorting?{orderBy id|submitTimeUTC, orderDescending},
//     paging?{limit 1..1000, offset 1..100000 = the PAGE number}}: every transaction not
//     yet in a settled batch, declined ones included (held ones stay here until reviewed);
//     without paging, the 1000 most recent;
//   - getSettledBatchListRequest{merchantAuthentication, refId?, includeStatistics?,
//     firstSettlementDate?, lastSettlementDate?} (xs:dateTime, UTC; at most 31 days apart);
//   - getTransactionListRequest{merchantAuthentication, refId?, batchId, sorting?, paging?}.
// Answers: {transactions?|batchList?, totalNumInResultSet?, refId?, messages}; nothing
// found is resultCode Ok with I00004 "No records found." and no list. A summary is
// {transId, submitTimeUTC, submitTimeLocal, transactionStatus, invoiceNumber?,
// accountType, accountNumber, settleAmount (a JSON number), marketType, product}.
// Every transaction the processor saw (approved: capturedPendingSettlement, declined,
// held: FDSPendingReview) is kept; refused requests (E00114/E00115, error 11, the
// tok_error general error, whose transId is "0") are not transactions. Settlement is
// daily at the merchant's Transaction Cut-Off Time (here 22:00 UTC, on the stand-in's
// clock, so advanceClock moves transactions into a settled batch): each cut-off's
// batch takes every unsettled transaction submitted before it except held ones, and
// capturedPendingSettlement becomes settledSuccessfully. UNCONFIRMED: the error code
// for a date range over 31 days (the stand-in answers E00003), and whether an empty
// list carries totalNumInResultSet (the stand-in sends it; the Worker needs neither).
//
// Refunds (refundTransaction) and getTransactionDetailsRequest: anet_refunds.mjs.
// Each kind of test token stands for a test card ending in 1111. Locally (`make dev`)
// POST /__standin/settle on the stand-in's port runs a cut-off now (every unsettled
// transaction settles), so a deposit can be refunded without waiting for 22:00 UTC;
// it is not part of Authorize.Net's API.
import crypto from "node:crypto";
import http from "node:http";
import { refundDesk } from "./anet_refunds.mjs";
import { UserError } from "./common.mjs";

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
// Transaction Reporting.
const UNSETTLED_ORDER = ["merchantAuthentication", "clientId", "refId", "status", "sorting", "paging"];
const BATCH_LIST_ORDER = [
  "merchantAuthentication", "clientId", "refId", "includeStatistics", "firstSettlementDate", "lastSettlementDate",
];
const TRANSACTION_LIST_ORDER = ["merchantAuthentication", "clientId", "refId", "batchId", "sorting", "paging"];
const SORTING_ORDER = ["orderBy", "orderDescending"];
const PAGING_ORDER = ["limit", "offset"];
const DAY_MS = 86400 * 1000;
const CUTOFF_MS_OF_DAY = 22 * 3600 * 1000; // the Transaction Cut-Off Time, 22:00 UTC
const MAX_BATCH_RANGE_MS = 31 * DAY_MS;
const MAX_LIST_WITHOUT_PAGING = 1000;
const HELD_STATUSES = new Set(["FDSPendingReview", "FDSAuthorizedPendingReview"]);
const STATUS_OF_RESPONSE_CODE = { 1: "capturedPendingSettlement", 2: "declined", 4: "FDSPendingReview" };
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

export async function startAnetStandin({ loginId, transactionKey, signatureKey, port = 0, log = () => {} }) {
  const received = []; // parsed request bodies, newest last (tests inspect them)
  const hanging = new Set();
  const usedNonces = new Set(); // single-use tokens already used (insertion order = age)
  const processed = []; // {key, atMs, transId, responseCode, authCode, avsResultCode, cvvResultCode}, oldest first
  const transactions = []; // every transaction the processor saw, oldest first (Transaction Reporting)
  const batches = new Map(); // cut-off time (ms) -> {batchId, settlementTimeMs}
  let nextBatchId = 8000000 + Math.floor(Math.random() * 1e6);
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
  function process(kind, key, tr0) {
    const transId = String(nextTransId++);
    const responseCode = { approved: "1", duplicate: "1", declined: "2", held: "4" }[kind];
    const tr = transactionResponse(responseCode, transId, {});
    processed.push({
      key, atMs: nowMs(), transId, responseCode,
      authCode: tr.authCode, avsResultCode: tr.avsResultCode, cvvResultCode: tr.cvvResultCode,
    });
    if (processed.length > MAX_REMEMBERED) processed.shift();
    transactions.push({
      transId,
      submitMs: nowMs(),
      status: STATUS_OF_RESPONSE_CODE[responseCode],
      invoiceNumber: tr0.order?.invoiceNumber,
      amount: Number(tr0.amount),
      type: "authCaptureTransaction",
      card: "1111",
      refundedCents: 0,
      batchCutoffMs: null,
    });
    if (transactions.length > MAX_REMEMBERED) transactions.shift();
    return { transId, responseCode };
  }

  // --- Transaction Reporting ---------------------------------------------------

  // The first cut-off strictly after a time.
  function cutoffAfter(ms) {
    const dayStart = Math.floor(ms / DAY_MS) * DAY_MS;
    const today = dayStart + CUTOFF_MS_OF_DAY;
    return ms < today ? today : today + DAY_MS;
  }

  // Every cut-off passed since a transaction was submitted settles it into that cut-off's batch.
  function settleDue() {
    const now = nowMs();
    for (const t of transactions) {
      if (t.batchCutoffMs !== null || HELD_STATUSES.has(t.status)) continue;
      const cutoff = cutoffAfter(t.submitMs);
      if (cutoff > now) continue;
      settleInto(t, cutoff);
    }
  }

  function settleInto(t, cutoff) {
    if (!batches.has(cutoff)) batches.set(cutoff, { batchId: String(nextBatchId++), settlementTimeMs: cutoff });
    t.batchCutoffMs = cutoff;
    if (t.status === "capturedPendingSettlement") t.status = "settledSuccessfully";
    if (t.status === "refundPendingSettlement") t.status = "refundSettledSuccessfully";
  }

  // A cut-off now (the dev control POST /__standin/settle): every unsettled transaction but held ones.
  function settleNow() {
    settleDue();
    const now = nowMs();
    let settled = 0;
    for (const t of transactions) {
      if (t.batchCutoffMs !== null || HELD_STATUSES.has(t.status)) continue;
      settleInto(t, now);
      settled++;
    }
    return settled;
  }

  const utc = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
  // The merchant's time zone (Mountain Standard Time here), no offset written, as the API writes it.
  const local = (ms) => new Date(ms - 7 * 3600 * 1000).toISOString().replace(/\.\d{3}Z$/, "");

  function summary(t) {
    const out = {
      transId: t.transId,
      submitTimeUTC: utc(t.submitMs),
      submitTimeLocal: local(t.submitMs),
      transactionStatus: t.status,
    };
    if (t.invoiceNumber !== undefined) out.invoiceNumber = t.invoiceNumber;
    return {
      ...out,
      accountType: "Visa",
      accountNumber: "XXXX1111",
      settleAmount: t.amount,
      marketType: "eCommerce",
      product: "Card Not Present",
    };
  }

  // Sorting and paging as the XSD has them (throws SchemaError).
  function sortedPage(list, req) {
    let orderBy = "id";
    let descending = false;
    if (req.sorting !== undefined) {
      checkOrder("sorting", req.sorting, SORTING_ORDER);
      orderBy = req.sorting.orderBy;
      if (orderBy !== "id" && orderBy !== "submitTimeUTC") {
        throw new SchemaError(`The 'AnetApi/xml/v1/schema/AnetApiSchema.xsd:orderBy' element is invalid - The value '${orderBy}' is invalid according to its datatype 'AnetApi/xml/v1/schema/AnetApiSchema.xsd:TransactionListOrderFieldEnum' - The Enumeration constraint failed.`);
      }
      const d = req.sorting.orderDescending;
      if (![true, false, "true", "false"].includes(d)) {
        throw new SchemaError(`The 'AnetApi/xml/v1/schema/AnetApiSchema.xsd:orderDescending' element is invalid - The value '${d}' is invalid according to its datatype 'Boolean'.`);
      }
      descending = d === true || d === "true";
    }
    const key = orderBy === "id" ? (t) => Number(t.transId) : (t) => t.submitMs;
    const sorted = [...list].sort((a, b) => (key(a) - key(b)) * (descending ? -1 : 1) || Number(a.transId) - Number(b.transId));
    if (req.paging === undefined) {
      return { page: sorted.slice(-MAX_LIST_WITHOUT_PAGING), total: sorted.length };
    }
    checkOrder("paging", req.paging, PAGING_ORDER);
    const bounded = (name, value, high) => {
      const n = Number(value);
      if (!/^\d{1,6}$/.test(String(value)) || n < 1 || n > high) {
        throw new SchemaError(`The 'AnetApi/xml/v1/schema/AnetApiSchema.xsd:${name}' element is invalid - The value '${value}' is invalid according to its datatype 'Int' - The ${n < 1 ? "MinInclusive" : "MaxInclusive"} constraint failed.`);
      }
      return n;
    };
    const limit = bounded("limit", req.paging.limit, 1000);
    const pageNumber = bounded("offset", req.paging.offset, 100000);
    return { page: sorted.slice((pageNumber - 1) * limit, pageNumber * limit), total: sorted.length };
  }

  function listAnswer(name, items, total, refId) {
    const out = {};
    if (items.length > 0) out[name] = items;
    if (total !== undefined) out.totalNumInResultSet = total;
    if (refId !== undefined) out.refId = refId;
    out.messages = items.length > 0 ? messages("Ok", "I00001", "Successful.") : messages("Ok", "I00004", "No records found.");
    return out;
  }

  function parseDateTime(name, value) {
    // xs:dateTime; without a zone designator the API reads UTC.
    const text = String(value);
    const ms = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$/.test(text)
      ? Date.parse(/(Z|[+-]\d{2}:\d{2})$/.test(text) ? text : text + "Z")
      : NaN;
    if (Number.isNaN(ms)) {
      throw new SchemaError(`The '${name}' element is invalid - The value '${text}' is invalid according to its datatype 'DateTime'.`);
    }
    return ms;
  }

  function report(rootName, env) {
    const refId = typeof env.refId === "string" ? env.refId : undefined;
    const order = {
      getUnsettledTransactionListRequest: UNSETTLED_ORDER,
      getSettledBatchListRequest: BATCH_LIST_ORDER,
      getTransactionListRequest: TRANSACTION_LIST_ORDER,
    }[rootName];
    try {
      checkOrder(rootName, env, order);
      checkOrder("merchantAuthentication", env.merchantAuthentication, AUTH_ORDER);
    } catch (e) {
      if (e instanceof SchemaError) return answerOf({ refId, messages: messages("Error", "E00003", e.message) });
      throw e;
    }
    const auth = env.merchantAuthentication;
    if (auth.name !== loginId || auth.transactionKey !== transactionKey) {
      return answerOf({ refId, messages: messages("Error", "E00007", "User authentication failed due to invalid authentication values.") });
    }
    settleDue();
    try {
      if (rootName === "getUnsettledTransactionListRequest") {
        const status = env.status ?? "any";
        if (status !== "any" && status !== "pendingApproval") {
          throw new SchemaError(`The 'AnetApi/xml/v1/schema/AnetApiSchema.xsd:status' element is invalid - The value '${status}' is invalid according to its datatype 'AnetApi/xml/v1/schema/AnetApiSchema.xsd:TransactionGroupStatusEnum' - The Enumeration constraint failed.`);
        }
        const unsettled = transactions.filter(
          (t) => t.batchCutoffMs === null && (status === "any" || HELD_STATUSES.has(t.status)),
        );
        const { page, total } = sortedPage(unsettled, env);
        return listAnswer("transactions", page.map(summary), total, refId);
      }
      if (rootName === "getSettledBatchListRequest") {
        const now = nowMs();
        const last = env.lastSettlementDate === undefined ? now : parseDateTime("lastSettlementDate", env.lastSettlementDate);
        const first = env.firstSettlementDate === undefined ? last - DAY_MS : parseDateTime("firstSettlementDate", env.firstSettlementDate);
        if (last < first || last - first > MAX_BATCH_RANGE_MS) {
          throw new SchemaError("The date range between firstSettlementDate and lastSettlementDate cannot exceed 31 days.");
        }
        const list = [...batches.values()]
          .filter((b) => b.settlementTimeMs >= first && b.settlementTimeMs <= last && b.settlementTimeMs <= now)
          .sort((a, b) => a.settlementTimeMs - b.settlementTimeMs)
          .map((b) => ({
            batchId: b.batchId,
            settlementTimeUTC: utc(b.settlementTimeMs),
            settlementTimeLocal: local(b.settlementTimeMs),
            settlementState: "settledSuccessfully",
            paymentMethod: "creditCard",
            marketType: "eCommerce",
            product: "Card Not Present",
          }));
        return listAnswer("batchList", list, undefined, refId);
      }
      const batchId = String(env.batchId ?? "");
      if (!/^\d+$/.test(batchId)) {
        throw new SchemaError(`The 'AnetApi/xml/v1/schema/AnetApiSchema.xsd:batchId' element is invalid - The value '${batchId}' is invalid according to its datatype 'AnetApi/xml/v1/schema/AnetApiSchema.xsd:numericString' - The Pattern constraint failed.`);
      }
      const cutoff = [...batches.entries()].find(([, b]) => b.batchId === batchId)?.[0];
      const inBatch = cutoff === undefined ? [] : transactions.filter((t) => t.batchCutoffMs === cutoff);
      const { page, total } = sortedPage(inBatch, env);
      return listAnswer("transactions", page.map(summary), total, refId);
    } catch (e) {
      if (e instanceof SchemaError) return answerOf({ refId, messages: messages("Error", "E00003", e.message) });
      throw e;
    }
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

  const refunds = refundDesk({
    transactions,
    nowMs,
    messages,
    transactionResponse,
    checkOrder,
    SchemaError,
    duplicateKey,
    findOriginal,
    duplicateAnswer,
    defaultDuplicateWindowS: DEFAULT_DUPLICATE_WINDOW_S,
    settleDue,
    utc,
    local,
    batchAt: (cutoff) => batches.get(cutoff),
    authorised: (auth) => auth.name === loginId && auth.transactionKey === transactionKey,
    newTransId: () => String(nextTransId++),
    remember(record) {
      processed.push(record);
      if (processed.length > MAX_REMEMBERED) processed.shift();
    },
    record(t) {
      transactions.push(t);
      if (transactions.length > MAX_REMEMBERED) transactions.shift();
    },
  });

  function answer(body) {
    if (body?.getTransactionDetailsRequest !== undefined) return refunds.details(body.getTransactionDetailsRequest);
    for (const rootName of ["getUnsettledTransactionListRequest", "getSettledBatchListRequest", "getTransactionListRequest"]) {
      if (body?.[rootName] !== undefined) return report(rootName, body[rootName]);
    }
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
    if (tr.transactionType !== "authCaptureTransaction" && tr.transactionType !== "refundTransaction") {
      return withRef({ messages: messages("Error", "E00003", `The stand-in only knows authCaptureTransaction and refundTransaction.`) });
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
    if (tr.transactionType === "refundTransaction") {
      const out = refunds.refund(tr, windowS, amount);
      return out === "hang" ? out : withRef(out);
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
    if (kind === "duplicate") process(kind, key, tr); // the first copy, whose answer was lost
    const original = effectiveWindowS > 0 ? findOriginal(key, effectiveWindowS) : undefined;
    if (original !== undefined) return withRef(duplicateAnswer(original, windowS));
    const { transId } = process(kind, key, tr);
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
    if (req.method === "POST" && req.url === "/__standin/settle") {
      const settled = settleNow();
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ settled }));
      return;
    }
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
  // A fixed port (make dev: 8788, so POST /__standin/settle has the address the README names) must be
  // free: falling back to another would leave the README's curl talking to whatever holds 8788 (a
  // `make dev` still running). Port 0: any free one (the tests).
  await new Promise((resolve, reject) => {
    server.once("error", (error) => {
      if (error.code !== "EADDRINUSE") return reject(error);
      reject(new UserError(`port ${port} (the Authorize.Net stand-in) is in use: is another \`make dev\` running? ` +
        `Stop it, or choose another port with ANET_STANDIN_PORT=...`));
    });
    server.listen(port, "127.0.0.1", resolve);
  });
  const endpoint = `http://127.0.0.1:${server.address().port}/xml/v1/request.api`;
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
      // What the next refunds of one original meet (anet_refunds.mjs), and a transaction made older.
      planRefunds(refTransId, behaviours) {
        refunds.plan(refTransId, behaviours);
      },
      ageTransaction(transId, seconds) {
        refunds.age(transId, seconds);
      },
      settleNow,
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
