#!/usr/bin/env node
// Demo data for `make dev` (runs after the migrations; offline; idempotent).
//
//   advisors  luna (tarot, love; online), orion (astrology, career; online),
//             sage (dreams, spiritual, mediumship; online), nova (numerology; offline)
//   clients   ann ($50.00), ben ($20.00), cara ($2.50: enough for a minute or two)
//             and dee (reviewer, $0 left)
//
// Every user's sub is `user_<name>`, so `make token USER=ann` is ann's token.
// Money goes through the real ledger: each wallet is funded by an approved
// payment row and a deposit transfer from the gateway clearing account; past
// readings are charged minute by minute (transfer + entries + reading_charges
// row), so the triggers of migrations 0002/0010/0020 check every row.
//
// Idempotent: ids and transfer keys are fixed and every statement is guarded
// (INSERT ... WHERE NOT EXISTS / ON CONFLICT DO NOTHING, conditional UPDATEs),
// so a second run, or a run after a partial one, adds nothing twice.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { ROOT, stateDir } from "./common.mjs";

const envName = (() => {
  const i = process.argv.indexOf("--env");
  return i >= 0 ? process.argv[i + 1] || "" : "";
})();
const database = envName ? `clairvora-db-${envName}` : "clairvora-db";
// --persist-to DIR: another local state (the seed's own test uses a scratch one).
const persistTo = (() => {
  const i = process.argv.indexOf("--persist-to");
  return i >= 0 ? process.argv[i + 1] : stateDir(envName);
})();

const BASE_ID = 1_100_000_000_000; // >= 2**40, like ids.new_id(); fixed so reruns find their rows
let nextId = 0;
const id = () => BASE_ID + ++nextId;
const q = (s) => (s === null ? "NULL" : `'${String(s).replaceAll("'", "''")}'`); // constants of this file only
const DAY = 86_400_000;
const MINUTE = 60_000;
const now = Date.now();
const sql = [];

const CLIENTS = [
  { name: "ann", display: "Ann", funds: 5000 },
  { name: "ben", display: "Ben", funds: 2000 },
  { name: "cara", display: "Cara", funds: 250 },
  { name: "dee", display: "Dee", funds: 0 },
];
const ADVISORS = [
  { name: "luna", display: "Luna", headline: "Tarot for the heart", rate: 150, status: "online",
    bio: "Twenty years of tarot, gentle and direct.", categories: ["tarot", "love"] },
  { name: "orion", display: "Orion", headline: "Your chart, your career", rate: 250, status: "online",
    bio: "Natal charts and transits for big decisions.", categories: ["astrology", "career"] },
  { name: "sage", display: "Sage", headline: "Dreams and spirit guides", rate: 120, status: "online",
    bio: "Dream work, mediumship and spiritual guidance.", categories: ["dreams", "spiritual", "mediumship"] },
  { name: "nova", display: "Nova", headline: "Numbers never lie", rate: 90, status: "offline",
    bio: "Numerology readings (back tomorrow).", categories: ["numerology", "career"] },
];
// Past readings that ended and were reviewed: [client, advisor, minutes, rating, comment].
const PAST = [
  ["ben", "luna", 3, 5, "Luna saw right through it. Thank you!"],
  ["dee", "luna", 2, 4, "Kind and clear."],
  ["ben", "orion", 2, 4, "Useful for my job change."],
  ["dee", "sage", 3, 5, "The dream finally makes sense."],
  ["cara", "sage", 1, 3, null],
];
const FEE_BPS = 3000; // wrangler.toml PLATFORM_FEE_BPS

const users = {};
function user(name, display) {
  const uid = id();
  const wallet = id();
  users[name] = { id: uid, wallet };
  sql.push(`INSERT INTO users (id, clerk_user_id, display_name, created_at_ms, updated_at_ms)
    VALUES (${uid}, ${q("user_" + name)}, ${q(display)}, ${now - 30 * DAY}, ${now - 30 * DAY})
    ON CONFLICT DO NOTHING;`);
  sql.push(`INSERT INTO accounts (id, kind, owner_user_id, created_at_ms)
    SELECT ${wallet}, 'client_wallet', ${uid}, ${now - 30 * DAY} ON CONFLICT DO NOTHING;`);
}

// One balanced transfer, each statement guarded by the transfer's state.
function transfer(key, kind, legs, at, refType, refId) {
  const tid = id();
  sql.push(`INSERT INTO transfers (id, transfer_key, kind, reference_type, reference_id, created_at_ms)
    SELECT ${tid}, ${q(key)}, ${q(kind)}, ${q(refType)}, ${refId ?? "NULL"}, ${at}
    WHERE NOT EXISTS (SELECT 1 FROM transfers WHERE transfer_key = ${q(key)});`);
  for (const [account, amount] of legs) {
    sql.push(`INSERT INTO ledger_entries (transfer_id, account_id, amount_cents, balance_after_cents, sequence, created_at_ms)
      SELECT ${tid}, a.id, ${amount}, a.balance_cents + ${amount}, a.last_sequence + 1, ${at}
      FROM accounts a WHERE ${account}
        AND EXISTS (SELECT 1 FROM transfers WHERE id = ${tid} AND posted = 0)
        AND NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transfer_id = ${tid} AND e.account_id = a.id);`);
  }
  sql.push(`UPDATE transfers SET posted = 1 WHERE id = ${tid} AND posted = 0;`);
  return tid;
}
const walletOf = (name) => `a.owner_user_id = ${users[name].id} AND a.kind = 'client_wallet'`;
const earningsOf = (name) => `a.owner_user_id = ${users[name].id} AND a.kind = 'advisor_earnings'`;
const CLEARING = "a.id = 2";
const PLATFORM = "a.id = 1";

for (const c of CLIENTS) user(c.name, c.display);
for (const a of ADVISORS) user(a.name, a.display);

for (const a of ADVISORS) {
  const uid = users[a.name].id;
  sql.push(`INSERT INTO advisors (user_id, headline, bio, rate_cents_per_minute, status, created_at_ms, updated_at_ms)
    VALUES (${uid}, ${q(a.headline)}, ${q(a.bio)}, ${a.rate}, ${q(a.status)}, ${now - 29 * DAY}, ${now - 29 * DAY})
    ON CONFLICT DO NOTHING;`);
  for (const cat of a.categories) {
    sql.push(`INSERT INTO advisor_categories (category, advisor_id) VALUES (${q(cat)}, ${uid}) ON CONFLICT DO NOTHING;`);
  }
  sql.push(`INSERT INTO accounts (id, kind, owner_user_id, created_at_ms)
    SELECT ${id()}, 'advisor_earnings', ${uid}, ${now - 29 * DAY} ON CONFLICT DO NOTHING;`);
}

// Wallets: what each client spends in PAST plus what they keep.
for (const c of CLIENTS) {
  const spent = PAST.filter(([cl]) => cl === c.name)
    .reduce((sum, [, adv, minutes]) => sum + minutes * ADVISORS.find((a) => a.name === adv).rate, 0);
  const amount = c.funds + spent;
  if (amount === 0) continue;
  const paymentId = id();
  const at = now - 20 * DAY;
  sql.push(`INSERT INTO payments (id, user_id, amount_cents, status, gateway_transaction_id, gateway_response_code,
      created_at_ms, updated_at_ms)
    VALUES (${paymentId}, ${users[c.name].id}, ${amount}, 'approved', ${q("seed" + paymentId)}, '1', ${at}, ${at})
    ON CONFLICT DO NOTHING;`);
  transfer(`deposit:payment:${paymentId}`, "deposit", [[walletOf(c.name), amount], [CLEARING, -amount]], at,
    "payment", paymentId);
}

// Past readings: active, charged minute by minute, ended, reviewed.
PAST.forEach(([clientName, advisorName, minutes, rating, comment], n) => {
  const advisor = ADVISORS.find((a) => a.name === advisorName);
  const rid = id();
  const rate = advisor.rate;
  const platform = Math.floor((rate * FEE_BPS) / 10_000);
  const advisorPart = rate - platform;
  const start = now - (10 - n) * DAY;
  sql.push(`INSERT INTO readings (id, client_id, advisor_id, status, rate_cents_per_minute, advisor_cents_per_minute,
      platform_cents_per_minute, billing_period_seconds, requested_at_ms, accepted_at_ms, last_heartbeat_at_ms)
    VALUES (${rid}, ${users[clientName].id}, ${users[advisorName].id}, 'active', ${rate}, ${advisorPart}, ${platform},
      60, ${start}, ${start + 5000}, ${start + 5000})
    ON CONFLICT DO NOTHING;`);
  for (let k = 1; k <= minutes; k++) {
    const at = start + 5000 + (k - 1) * MINUTE;
    const tid = transfer(`reading:${rid}:minute:${k}`, "reading_charge",
      [[walletOf(clientName), -rate], [earningsOf(advisorName), advisorPart], [PLATFORM, platform]], at, "reading", rid);
    sql.push(`INSERT INTO reading_charges (reading_id, minute, transfer_id, amount_cents, charged_at_ms)
      SELECT ${rid}, ${k}, ${tid}, ${rate}, ${at}
      WHERE NOT EXISTS (SELECT 1 FROM reading_charges WHERE reading_id = ${rid} AND minute = ${k});`);
  }
  const endedAt = start + 5000 + minutes * MINUTE - 10_000;
  sql.push(`UPDATE readings SET status = 'ended', end_reason = 'client_ended', ended_at_ms = ${endedAt},
      last_heartbeat_at_ms = ${endedAt}, version = version + 1
    WHERE id = ${rid} AND status = 'active';`);
  const reviewId = id();
  sql.push(`INSERT INTO reviews (id, reading_id, client_id, advisor_id, rating, comment, created_at_ms)
    SELECT ${reviewId}, ${rid}, ${users[clientName].id}, ${users[advisorName].id}, ${rating}, ${q(comment)}, ${endedAt + MINUTE}
    WHERE NOT EXISTS (SELECT 1 FROM reviews WHERE reading_id = ${rid});`);
});
// Rating aggregates recomputed from the reviews (idempotent by construction).
for (const a of ADVISORS) {
  const uid = users[a.name].id;
  sql.push(`UPDATE advisors SET
      rating_count = (SELECT count(*) FROM reviews WHERE advisor_id = ${uid}),
      rating_sum = (SELECT coalesce(sum(rating), 0) FROM reviews WHERE advisor_id = ${uid}),
      rating_milli = coalesce((SELECT sum(rating) * 1000 / count(*) FROM reviews WHERE advisor_id = ${uid}), 0)
    WHERE user_id = ${uid};`);
}

const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "clairvora-seed-")), "seed.sql");
fs.writeFileSync(file, sql.join("\n") + "\n");
const bin = path.join(ROOT, "node_modules", "wrangler", "bin", "wrangler.js");
const result = spawnSync(process.execPath, [bin, "d1", "execute", database, "--local", "--persist-to", persistTo,
  ...(envName ? ["--env", envName] : []), "--file", file, "--yes"], {
  cwd: ROOT, encoding: "utf8", env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" },
});
fs.rmSync(path.dirname(file), { recursive: true, force: true });
if (result.status !== 0) {
  console.error(`[seed] failed:\n${result.stdout}\n${result.stderr}`);
  process.exit(1);
}
console.error(`[seed] demo data in place (${sql.length} guarded statements): advisors luna, orion, sage, nova; ` +
  "clients ann, ben, cara, dee. `make token USER=ann`");
