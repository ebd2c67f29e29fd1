// node:http front for the local runtime: an incoming request becomes a Web
// Request, goes through dispatchFetch, and the Web Response is written back.
import http from "node:http";

// Far above the Worker's own body limit, so the Worker's 413 is what clients see.
const TRANSPORT_BODY_LIMIT_BYTES = 16 * 1024 * 1024;

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > TRANSPORT_BODY_LIMIT_BYTES) {
        reject(Object.assign(new Error("body too large"), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function toWebRequest(req, body, origin) {
  const headers = new Headers();
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
  }
  const hasBody = !["GET", "HEAD"].includes(req.method) && body.length > 0;
  return new Request(new URL(req.url, origin), {
    method: req.method,
    headers,
    body: hasBody ? body : undefined,
  });
}

async function writeWebResponse(res, response, method) {
  const headers = {};
  for (const [name, value] of response.headers) {
    if (name === "set-cookie") continue;
    headers[name] = value;
  }
  const cookies = response.headers.getSetCookie?.() ?? [];
  if (cookies.length) headers["set-cookie"] = cookies;
  const body = method === "HEAD" ? null : Buffer.from(await response.arrayBuffer());
  res.writeHead(response.status, headers);
  res.end(body);
}

function problem(res, status, title, code) {
  res.writeHead(status, { "content-type": "application/problem+json" });
  res.end(JSON.stringify({ type: "about:blank", title, status, detail: title, code }));
}

// Serves until the process ends. Resolves once listening, with the bound port.
export function serveHttp(runtime, { host = "127.0.0.1", port = 8787, onError = console.error } = {}) {
  const server = http.createServer(async (req, res) => {
    try {
      const origin = `http://${req.headers.host || `${host}:${port}`}`;
      const url = new URL(req.url, origin);
      if (url.pathname === "/cdn-cgi/handler/scheduled") {
        await runtime.dispatchScheduled(url.searchParams.get("cron") || "* * * * *");
        res.writeHead(200, { "content-type": "text/plain" });
        res.end("scheduled handler ran\n");
        return;
      }
      const body = await readBody(req);
      const { response, settled } = await runtime.dispatchFetch(toWebRequest(req, body, origin));
      await writeWebResponse(res, response, req.method);
      await settled;
    } catch (error) {
      if (error.status === 413) return problem(res, 413, "Request body too large", "body_too_large");
      onError("local runtime: request failed outside the Worker:", error?.message ?? error);
      if (!res.headersSent) problem(res, 500, "Local runtime error", "runtime_error");
    }
  });
  server.keepAliveTimeout = 5000;
  return new Promise((resolve, reject) => {
    server.once("error", (error) => {
      if (error.code === "EADDRINUSE") {
        reject(new Error(`port ${port} on ${host} is in use: stop the other server or set PORT=<free port>`));
      } else reject(error);
    });
    server.listen(port, host, () => resolve({ server, port: server.address().port }));
  });
}
