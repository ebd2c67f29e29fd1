#!/usr/bin/env node
// Demo profile photos for `make dev` / `make seed`: runs after runtime/seed.mjs
// and gives some of the advisors already in local D1 a photo, stored the way
// PUT /v1/advisors/me/photo stores one (bytes in local R2 under an
// unguessable key, the reference in the advisor row, version bumped).
// The PNGs are drawn here (a head-and-shoulders silhouette on a colour per
// advisor), so nothing binary is committed. The first N advisors (oldest
// first) get one unless they have a photo, so running it again changes nothing.
//
// Everything goes through wrangler's own commands on the local state that
// `wrangler dev --persist-to` serves: `d1 execute` reads the advisors and sets
// the references, `r2 bulk put` stores the bytes (with their content type; the
// CLI sets no custom metadata, which the Worker never reads back). One wrangler
// command at a time: two on the same local state at once lose their connection.
//
//   node runtime/seed_photos.mjs [--env staging|production] [--persist-to DIR] [--count N]
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import { ROOT, WRANGLER_JS, readWranglerVars, stateDir } from "./common.mjs";

const SIZE_PX = 128;
const DEFAULT_COUNT = 3; // of the seed's four advisors: one stays without a photo

// --- a minimal PNG encoder (RGB, 8 bits) ------------------------------------
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buf) {
  let c = 0xffffffff;
  for (const byte of buf) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "ascii");
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

export function encodePng(width, height, pixel) {
  const rows = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    rows[row] = 0; // filter: none
    for (let x = 0; x < width; x++) rows.set(pixel(x, y), row + 1 + x * 3);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, no interlace
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr),
    chunk("IDAT", zlib.deflateSync(rows, { level: 9 })),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

function hslToRgb(h, s, l) {
  const f = (n) => {
    const k = (n + h / 30) % 12;
    const a = s * Math.min(l, 1 - l);
    return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

// A portrait placeholder: vertical gradient in the advisor's hue, a lighter
// head and shoulders in front.
export function portraitPng(hue) {
  const n = SIZE_PX;
  return encodePng(n, n, (x, y) => {
    const head = (x - n / 2) ** 2 + (y - n * 0.4) ** 2 <= (n * 0.18) ** 2;
    const shoulders = ((x - n / 2) / (n * 0.38)) ** 2 + ((y - n) / (n * 0.36)) ** 2 <= 1;
    if (head || shoulders) return hslToRgb(hue, 0.35, 0.9);
    return hslToRgb(hue, 0.55, 0.35 + 0.25 * (y / n));
  });
}

// --- seeding --------------------------------------------------------------
/** One wrangler command; its stdout (stderr too in the error). */
function wrangler(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRANGLER_JS, ...args], {
      cwd: ROOT,
      env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "true" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const out = [];
    const err = [];
    child.stdout.on("data", (c) => out.push(c));
    child.stderr.on("data", (c) => err.push(c));
    child.on("error", reject);
    child.on("close", (code) => {
      const stdout = Buffer.concat(out).toString("utf8");
      if (code === 0) return resolve(stdout);
      reject(new Error(`wrangler ${args.join(" ")} failed (${code}):\n${stdout}\n${Buffer.concat(err).toString("utf8")}`));
    });
  });
}

const sqlText = (value) => `'${String(value).replaceAll("'", "''")}'`;

async function main() {
  const args = process.argv.slice(2);
  const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
  const envName = option("--env", "");
  const count = Number(option("--count", DEFAULT_COUNT));
  if (!Number.isInteger(count) || count < 0) throw new Error(`--count wants a whole number, not ${option("--count")}`);
  // --persist-to DIR: another local state, as for seed.mjs (wrangler's layout: DIR/v3/...).
  const persistTo = path.resolve(option("--persist-to", stateDir(envName)));
  if (!fs.existsSync(path.join(persistTo, "v3", "d1"))) {
    console.error(`[seed] no local D1 state for ${envName || "local"}: run \`make migrate\` first`);
    process.exit(1);
  }
  const { config } = readWranglerVars(await import("wrangler"), envName);
  const database = config.d1_databases.find((d) => d.binding === "DB").database_name;
  const bucket = config.r2_buckets.find((b) => b.binding === "MEDIA").bucket_name;
  const local = ["--local", "--persist-to", persistTo, ...(envName ? ["--env", envName] : [])];
  const d1 = async (command) => {
    const out = await wrangler(["d1", "execute", database, ...local, "--json", "--command", command]);
    return JSON.parse(out.slice(out.indexOf("["))).map((statement) => statement.results);
  };

  const [candidates] = await d1(
    `SELECT user_id FROM (SELECT user_id, photo_key FROM advisors ORDER BY created_at_ms, user_id LIMIT ${count})
     WHERE photo_key IS NULL`,
  );
  if (candidates.length === 0) {
    console.error("[seed] photos: nothing to do (no advisors yet, or they have their photos)");
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "clairvora-photos-"));
  try {
    const photos = candidates.map(({ user_id: advisorId }, i) => {
      if (!/^\d+$/.test(String(advisorId))) throw new Error(`unexpected advisor id ${advisorId}`);
      const png = portraitPng((Number(advisorId) * 47) % 360); // a stable colour per advisor
      const file = path.join(dir, `${i}.png`);
      fs.writeFileSync(file, png);
      return {
        advisorId: String(advisorId),
        file,
        size: png.length,
        sha256: crypto.createHash("sha256").update(png).digest("hex"),
        key: `advisor-photos/${advisorId}/${crypto.randomBytes(16).toString("hex")}.png`,
      };
    });
    // The bytes first, then the references: a reference never names a missing object. One
    // wrangler run for them all (separate runs on one state at once lose their connection).
    const list = path.join(dir, "objects.json");
    fs.writeFileSync(list, JSON.stringify(photos.map((p) => ({ key: p.key, file: p.file }))));
    await wrangler(["r2", "bulk", "put", bucket, "--filename", list, "--content-type", "image/png", ...local]);
    const now = Date.now();
    const updated = await d1(
      photos
        .map(
          (p) => `UPDATE advisors SET photo_key = ${sqlText(p.key)}, photo_content_type = 'image/png',
                  photo_size_bytes = ${p.size}, photo_sha256 = ${sqlText(p.sha256)}, version = version + 1, updated_at_ms = ${now}
                WHERE user_id = ${p.advisorId} AND photo_key IS NULL RETURNING user_id`,
        )
        .join(";\n"),
    );
    // An advisor that got a photo meanwhile keeps it: its unused object goes.
    const unused = photos.filter((_p, i) => updated[i].length !== 1);
    for (const p of unused) await wrangler(["r2", "object", "delete", `${bucket}/${p.key}`, ...local]);
    const n = photos.length - unused.length;
    console.error(`[seed] photos: ${n} advisor${n === 1 ? "" : "s"} got a demo photo (${SIZE_PX}x${SIZE_PX} PNG in local R2)`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error) => {
    console.error(`[seed] photos failed: ${error?.stack ?? error}`);
    process.exit(1);
  });
}
