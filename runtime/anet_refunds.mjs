// The Authorize.Net stand-in's refunds and transaction details (anet_standin.mjs
// calls these; wire facts and sources in docs/PAYMENTS.md):
//   - createTransactionRequest with transactionType "refundTransaction": amount,
//     payment.creditCard{cardNumber: the original's last 4 digits (or "XXXX1234"),
//     expirationDate: "XXXX"}, refTransId, keys in XSD order. Refused with responseCode
//     "3" and messages Error/E00027 (transId "0", refTransID = the original):
//       16 "The transaction cannot be found." (no such original),
//       54 "The referenced transaction does not meet the criteria for issuing a credit."
//          (not settled, settled more than 120 days ago, or another card),
//       55 "The sum of credits against the referenced transaction would exceed the
//          original debit amount.";
//     the duplicate rule of charges applies (error 11, naming the first copy's transId
//     when duplicateWindow was sent). Approved: responseCode "1", authCode "", a new
//     transId, refTransID = the original's. A refund is a transaction of its own:
//     refundPendingSettlement, then refundSettledSuccessfully at the next cut-off.
//   - getTransactionDetailsRequest{merchantAuthentication, refId?, transId}:
//     {transaction:{transId, refTransId?, submitTimeUTC, submitTimeLocal, transactionType,
//     transactionStatus, responseCode (a number), responseReasonCode,
//     responseReasonDescription, authCode, AVSResponse, batch?{batchId,
//     settlementTimeUTC, settlementTimeLocal, settlementState}, order?, authAmount,
//     settleAmount (numbers), taxExempt, payment{creditCard{cardNumber "XXXX1111",
//     expirationDate "XXXX", cardType}}, customer?, recurringBilling, product,
//     marketType}, refId?, messages}; unknown transId: Error/E00040 "The record cannot
//     be found." (UNCONFIRMED code).
// Test controls (never part of the real API): plan(refTransId, behaviours) queues what
// the next refunds of that original meet, one each: "fail" (error 57 "An error occurred
// in processing. Please try again in 5 minutes.", nothing refunded: a failure once),
// "refuse" (error 54), "timeout" (held open, never processed), "lost" (processed,
// then the answer never comes back); age(transId, seconds) moves a transaction's
// submit time into the past (the cut-offs it then passed settle it).
const REFUND_WINDOW_MS = 120 * 86400 * 1000;
const CARD_ORDER = [
  "cardNumber", "expirationDate", "cardCode", "isPaymentToken", "cryptogram", "tokenRequestorName",
  "tokenRequestorId", "tokenRequestorEci",
];
const DETAILS_ORDER = ["merchantAuthentication", "clientId", "refId", "transId"];
const BEHAVIOURS = new Set(["fail", "refuse", "timeout", "lost"]);
const MAX_PLANNED = 1000;

export function refundDesk(ctx) {
  const planned = new Map(); // refTransId -> [behaviour, ...]

  function refused(tr, errorCode, errorText) {
    return {
      transactionResponse: ctx.transactionResponse("3", "0", {
        refTransID: String(tr.refTransId ?? ""),
        errors: [{ errorCode, errorText }],
      }),
      messages: ctx.messages("Error", "E00027", "The transaction was unsuccessful."),
    };
  }

  // -> an answer object, or "hang"
  function refund(tr, windowS, amount) {
    const card = tr.payment?.creditCard;
    if (card === undefined) {
      return { messages: ctx.messages("Error", "E00003", "The element 'payment' is required for refundTransaction.") };
    }
    try {
      ctx.checkOrder("creditCard", card, CARD_ORDER);
    } catch (e) {
      if (e instanceof ctx.SchemaError) return { messages: ctx.messages("Error", "E00003", e.message) };
      throw e;
    }
    const expiration = String(card.expirationDate ?? "");
    if (!/^(XXXX|\d{4})$/.test(expiration)) {
      return { messages: ctx.messages("Error", "E00003", `The 'expirationDate' element is invalid - the actual length is greater than the MaxLength value.`) };
    }
    ctx.settleDue();
    const refTransId = String(tr.refTransId ?? "");
    const original = ctx.transactions.find((t) => t.transId === refTransId && t.type === "authCaptureTransaction");
    const behaviour = planned.get(refTransId)?.shift();
    if (behaviour === "timeout") return "hang";
    if (behaviour === "fail") return refused(tr, "57", "An error occurred in processing. Please try again in 5 minutes.");
    if (behaviour === "refuse") return refused(tr, "54", "The referenced transaction does not meet the criteria for issuing a credit.");
    if (original === undefined) return refused(tr, "16", "The transaction cannot be found.");
    const last4 = String(card.cardNumber ?? "").slice(-4);
    const cents = Math.round(Number(amount) * 100);
    if (
      original.status !== "settledSuccessfully" || last4 !== original.card
      || ctx.nowMs() - original.batchCutoffMs > REFUND_WINDOW_MS
    ) {
      return refused(tr, "54", "The referenced transaction does not meet the criteria for issuing a credit.");
    }
    if (original.refundedCents + cents > Math.round(original.amount * 100)) {
      return refused(tr, "55", "The sum of credits against the referenced transaction would exceed the original debit amount.");
    }
    const key = ctx.duplicateKey(tr, `refund:${refTransId}:${last4}`, Number(amount).toFixed(2), windowS);
    const effectiveWindowS = windowS ?? ctx.defaultDuplicateWindowS;
    const first = effectiveWindowS > 0 ? ctx.findOriginal(key, effectiveWindowS) : undefined;
    if (first !== undefined) return ctx.duplicateAnswer(first, windowS);
    const transId = ctx.newTransId();
    ctx.remember({ key, atMs: ctx.nowMs(), transId, responseCode: "1", authCode: "", avsResultCode: "P", cvvResultCode: "" });
    original.refundedCents += cents;
    ctx.record({
      transId,
      type: "refundTransaction",
      refTransId,
      submitMs: ctx.nowMs(),
      status: "refundPendingSettlement",
      invoiceNumber: tr.order?.invoiceNumber,
      amount: Number(amount),
      card: original.card,
      refundedCents: 0,
      batchCutoffMs: null,
    });
    if (behaviour === "lost") return "hang";
    return {
      transactionResponse: ctx.transactionResponse("1", transId, {
        authCode: "",
        avsResultCode: "P",
        refTransID: refTransId,
        messages: [{ code: "1", description: "This transaction has been approved." }],
      }),
      messages: ctx.messages("Ok", "I00001", "Successful."),
    };
  }

  function details(env) {
    const refId = typeof env.refId === "string" ? env.refId : undefined;
    // The real answer's key order: transaction, refId, messages.
    const out = ({ transaction, messages }) => ({
      ...(transaction !== undefined ? { transaction } : {}),
      ...(refId !== undefined ? { refId } : {}),
      messages,
    });
    try {
      ctx.checkOrder("getTransactionDetailsRequest", env, DETAILS_ORDER);
      ctx.checkOrder("merchantAuthentication", env.merchantAuthentication, ["name", "transactionKey"]);
    } catch (e) {
      if (e instanceof ctx.SchemaError) return out({ messages: ctx.messages("Error", "E00003", e.message) });
      throw e;
    }
    if (!ctx.authorised(env.merchantAuthentication)) {
      return out({ messages: ctx.messages("Error", "E00007", "User authentication failed due to invalid authentication values.") });
    }
    ctx.settleDue();
    const t = ctx.transactions.find((x) => x.transId === String(env.transId ?? ""));
    if (t === undefined) return out({ messages: ctx.messages("Error", "E00040", "The record cannot be found.") });
    const code = { capturedPendingSettlement: 1, settledSuccessfully: 1, declined: 2, FDSPendingReview: 4 }[t.status] ?? 1;
    const tx = { transId: t.transId };
    if (t.refTransId !== undefined) tx.refTransId = t.refTransId;
    Object.assign(tx, {
      submitTimeUTC: ctx.utc(t.submitMs),
      submitTimeLocal: ctx.local(t.submitMs),
      transactionType: t.type,
      transactionStatus: t.status,
      responseCode: code,
      responseReasonCode: code === 1 ? 1 : 2,
      responseReasonDescription: code === 1 ? "Approval" : "Declined",
      authCode: t.type === "authCaptureTransaction" && code === 1 ? "QWE123" : "",
      AVSResponse: "Y",
    });
    if (t.batchCutoffMs !== null) {
      const batch = ctx.batchAt(t.batchCutoffMs);
      tx.batch = {
        batchId: batch.batchId,
        settlementTimeUTC: ctx.utc(batch.settlementTimeMs),
        settlementTimeLocal: ctx.local(batch.settlementTimeMs),
        settlementState: "settledSuccessfully",
      };
    }
    if (t.invoiceNumber !== undefined) tx.order = { invoiceNumber: t.invoiceNumber };
    Object.assign(tx, {
      authAmount: t.amount,
      settleAmount: t.amount,
      taxExempt: false,
      payment: { creditCard: { cardNumber: `XXXX${t.card}`, expirationDate: "XXXX", cardType: "Visa" } },
      recurringBilling: false,
      product: "Card Not Present",
      marketType: "eCommerce",
    });
    return out({ transaction: tx, messages: ctx.messages("Ok", "I00001", "Successful.") });
  }

  return {
    refund,
    details,
    plan(refTransId, behaviours) {
      const list = [].concat(behaviours).map(String);
      if (!list.every((b) => BEHAVIOURS.has(b))) throw new Error(`unknown refund behaviour in ${list}`);
      if (planned.size >= MAX_PLANNED) planned.delete(planned.keys().next().value);
      planned.set(String(refTransId), [...(planned.get(String(refTransId)) ?? []), ...list]);
    },
    age(transId, seconds) {
      const t = ctx.transactions.find((x) => x.transId === String(transId));
      if (t === undefined) throw new Error(`no transaction ${transId}`);
      if (t.batchCutoffMs !== null) throw new Error(`transaction ${transId} has settled already`);
      t.submitMs -= Number(seconds) * 1000;
    },
  };
}
