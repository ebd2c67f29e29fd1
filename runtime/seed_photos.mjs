#!/usr/bin/env node
// Demo profile photos for `make dev` / `make seed`: runs after runtime/seed.mjs
// and gives some of the advisors already in local D1 a photo, stored the way
// PUT /v1/advisors/me/photo stores one (bytes in local R2 under an
// unguessable key, the reference in the advisor row, version bumped).
// The PNGs are drawn here (a head-and-shoulders silhouette on a colour per
// advisor), so nothing binary is committed. The first N advisors (oldest
// first) get one unless they have a photo, so running it again changes nothing.
//
//   node runtime/seed_photos.mjs [--env staging|production] [--persist-to DIR] [--count N]
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { R2Bucket } from "./bindings.mjs";
import { ROOT, stateDir } from "./runtime.mjs";

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
async function main() {
  const args = process.argv.slice(2);
  const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
  const envName = option("--env", "");
  const count = Number(option("--count", DEFAULT_COUNT));
  // --persist-to DIR: another local state, as for seed.mjs (wrangler's layout: DIR/v3/...).
  const persist = path.join(option("--persist-to", stateDir(envName)), "v3");
  if (!fs.existsSync(path.join(persist, "d1"))) {
    console.error(`[seed] no local D1 state for ${envName || "local"}: run \`make migrate\` first`);
    process.exit(1);
  }
  process.env.WRANGLER_SEND_METRICS = "false";
  const wrangler = await import("wrangler");
  const proxy = await wrangler.getPlatformProxy({
    configPath: path.join(ROOT, "wrangler.toml"),
    environment: envName || undefined,
    persist: { path: persist },
    remoteBindings: false,
  });
  try {
    const { DB } = proxy.env;
    const MEDIA = new R2Bucket(proxy.env.MEDIA); // hands the proxy a plain ArrayBuffer
    const { results } = await DB.prepare(
      `SELECT user_id FROM (SELECT user_id, photo_key FROM advisors ORDER BY created_at_ms, user_id LIMIT ?)
       WHERE photo_key IS NULL`,
    )
      .bind(count)
      .all();
    if (results.length === 0) {
      console.error("[seed] photos: nothing to do (no advisors yet, or they have their photos)");
      return;
    }
    const now = Date.now();
    for (const { user_id: advisorId } of results) {
      const png = portraitPng((Number(advisorId) * 47) % 360); // a stable colour per advisor
      const sha256 = crypto.createHash("sha256").update(png).digest("hex");
      const key = `advisor-photos/${advisorId}/${crypto.randomBytes(16).toString("hex")}.png`;
      await MEDIA.put(key, png, { httpMetadata: { contentType: "image/png" }, customMetadata: { advisor_id: String(advisorId) }, sha256 });
      const { meta } = await DB.prepare(
        `UPDATE advisors SET photo_key = ?, photo_content_type = 'image/png', photo_size_bytes = ?, photo_sha256 = ?,
                version = version + 1, updated_at_ms = ?
         WHERE user_id = ? AND photo_key IS NULL`,
      )
        .bind(key, png.length, sha256, now, advisorId)
        .run();
      if (meta.changes !== 1) await MEDIA.delete(key); // someone else set one meanwhile
    }
    const n = results.length;
    console.error(`[seed] photos: ${n} advisor${n === 1 ? "" : "s"} got a demo photo (${SIZE_PX}x${SIZE_PX} PNG in local R2)`);
  } finally {
    await proxy.dispose();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error) => {
    console.error(`[seed] photos failed: ${error?.stack ?? error}`);
    process.exit(1);
  });
}
