// The host side of a test run, served on loopback to the test Worker (which
// runs inside workerd and can neither start processes nor read files): wrangler
// d1 execute on the run's D1, workerd's console output, the Authorize.Net
// stand-in's records and clock, the PayPal stand-in's webhooks and controls.
// JSON in, JSON out; POST only.
import http from "node:http";

const MAX_BODY_BYTES = 1024 * 1024;

export async function startControl({ d1Execute, workerLog, anetControl, paypalControl }) {
  const routes = {
    "/d1-execute": ({ sql }) => ({ stdout: d1Execute(String(sql)) }),
    "/worker-log": () => ({ text: workerLog() }),
    "/anet/received": ({ invoice }) => ({ requests: JSON.parse(anetControl.received(invoice ?? undefined)) }),
    "/anet/advance-clock": ({ seconds }) => {
      anetControl.advanceClock(Number(seconds));
      return { ok: true };
    },
    "/anet/plan-refunds": ({ trans_id, behaviours }) => {
      anetControl.planRefunds(String(trans_id), behaviours);
      return { ok: true };
    },
    "/anet/age-transaction": ({ trans_id, seconds }) => {
      anetControl.ageTransaction(String(trans_id), Number(seconds));
      return { ok: true };
    },
    "/anet/settle-now": () => ({ settled: anetControl.settleNow() }),
    "/paypal/take-webhooks": () => ({ deliveries: paypalControl.takeWebhooks() }),
    "/paypal/sign-event": ({ event }) => paypalControl.signEvent(event),
    "/paypal/next-create": ({ mode }) => {
      paypalControl.nextCreate(mode ?? null);
      return { ok: true };
    },
    "/paypal/return-item": ({ sender_batch_id }) => ({ ok: paypalControl.returnItem(sender_batch_id) }),
    "/paypal/revoke-tokens": () => {
      paypalControl.revokeTokens();
      return { ok: true };
    },
    "/paypal/counts": () => paypalControl.counts(),
    "/paypal/received": ({ path }) => ({ requests: paypalControl.received(path ?? "") }),
  };
  const server = http.createServer((req, res) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on("end", () => {
      const route = routes[req.url];
      let status = 200;
      let out;
      try {
        if (req.method !== "POST" || !route) throw Object.assign(new Error(`no ${req.method} ${req.url}`), { status: 404 });
        if (size > MAX_BODY_BYTES) throw Object.assign(new Error("body too large"), { status: 413 });
        out = route(chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : {});
      } catch (error) {
        status = error.status ?? 500;
        out = { error: String(error.message ?? error) };
      }
      // One request per connection: workerd pools connections, and a pooled one that Node closed
      // after its keep-alive timeout fails the next call with "Network connection lost".
      res.writeHead(status, { "content-type": "application/json", connection: "close" });
      res.end(JSON.stringify(out));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    stop: () => new Promise((resolve) => server.close(resolve)),
  };
}
