// A Node.js HTTPS origin that renegotiates to ask for a client certificate, for
// Periscope's tests.
//
// Unlike Apache and the Python peer, it keeps Node's defaults: session tickets on and
// no SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION. A client that offers its session
// in the renegotiation's ClientHello therefore resumes, and then the server sends no
// CertificateRequest; only a client whose renegotiation is a full handshake gets one.
//
// TLS 1.2 only. After reading the request (and, for POST, its whole body) it
// renegotiates on these paths:
//   /optional/...  ask for a certificate, accept none
//   /required/...  ask for a certificate, fail the handshake without one
// Other paths are answered without renegotiating.
//
// Every answer is JSON: {"path", "method", "body_length", "body_sha256",
// "renegotiated", "resumed", "client_cert": CN or null, "authorized",
// "connection_resumed"}: "resumed" is about the renegotiation, "connection_resumed"
// whether the connection's first handshake resumed a session. A `close` query
// parameter answers with `Connection: close`, so the next request needs a new
// connection.
// Stdout: "listening on PORT" once ready, then one line per renegotiation and per
// failed connection:
//   renegotiation path=/optional/x resumed=false client_cert=CN|none
//   renegotiation path=/required/x rejected: <reason>   (resumed without a certificate)
//   renegotiation path=/required/x failed: <reason>     (e.g. no certificate)
//   client error: <code> <message>                      (e.g. the handshake failed)
//
// Usage: node renegotiating_origin.mjs --cert PEM --key PEM --client-ca PEM [--port N]

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import https from "node:https";
import tls from "node:tls";
import { parseArgs } from "node:util";

const { values: options } = parseArgs({
  options: {
    cert: { type: "string" },
    key: { type: "string" },
    "client-ca": { type: "string" },
    port: { type: "string", default: "0" },
  },
});
for (const required of ["cert", "key", "client-ca"]) {
  if (!options[required]) {
    console.error(`missing --${required}`);
    process.exit(2);
  }
}

// Node counts every handshake start against a limit meant for client-initiated
// renegotiation (3 per 10 minutes), and a server-initiated one counts twice: without
// this, the second renegotiation on a keep-alive connection fails.
tls.CLIENT_RENEG_LIMIT = 1000;

const server = https.createServer({
  cert: readFileSync(options.cert),
  key: readFileSync(options.key),
  ca: readFileSync(options["client-ca"]),
  minVersion: "TLSv1.2",
  maxVersion: "TLSv1.2",
  // The first handshake asks for nothing; the renegotiation asks.
  requestCert: false,
});

function clientCertificateName(socket) {
  const certificate = socket.getPeerCertificate();
  return certificate && certificate.subject ? certificate.subject.CN : null;
}

function answer(response, status, report) {
  const body = JSON.stringify(report);
  const headers = {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
  };
  if (report.close) {
    headers.Connection = "close";
  }
  response.writeHead(status, headers);
  response.end(body);
}

function renegotiationPolicy(path) {
  if (path.startsWith("/optional")) {
    return { requestCert: true, rejectUnauthorized: false };
  }
  if (path.startsWith("/required")) {
    return { requestCert: true, rejectUnauthorized: true };
  }
  return null;
}

server.on("request", (request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    const body = Buffer.concat(chunks);
    const url = new URL(request.url, "https://localhost");
    const path = url.pathname;
    const socket = request.socket;
    const report = {
      connection_resumed: socket.isSessionReused(),
      close: url.searchParams.has("close"),
      path,
      method: request.method,
      body_length: body.length,
      body_sha256: createHash("sha256").update(body).digest("hex"),
      renegotiated: false,
      resumed: null,
      client_cert: null,
      authorized: socket.authorized,
    };
    const policy = renegotiationPolicy(path);
    if (!policy) {
      answer(response, 200, report);
      return;
    }
    // Node's own 'secure' listener destroys a socket whose renegotiation did not
    // satisfy rejectUnauthorized before the renegotiate callback runs: look first.
    socket.prependOnceListener("secure", () => {
      report.renegotiated = true;
      report.resumed = socket.isSessionReused();
      report.client_cert = clientCertificateName(socket);
      console.log(
        `renegotiation path=${path} resumed=${report.resumed} ` +
          `client_cert=${report.client_cert ?? "none"}`,
      );
    });
    // Node ends a renegotiation that failed for want of a certificate silently.
    const reportUnfinished = () => {
      if (!report.renegotiated) {
        console.log(`renegotiation path=${path} failed: the connection closed`);
      }
    };
    socket.once("close", reportUnfinished);
    const started = socket.renegotiate(policy, (error) => {
      socket.off("close", reportUnfinished);
      if (error) {
        console.log(`renegotiation path=${path} failed: ${error.message}`);
        socket.destroy();
        return;
      }
      if (socket.destroyed) {
        console.log(`renegotiation path=${path} rejected: ${socket.authorizationError}`);
        return;
      }
      report.authorized = socket.authorized;
      answer(response, 200, report);
    });
    if (!started) {
      console.log(`renegotiation path=${path} failed: could not start`);
    }
  });
});

// A handshake the server fails (no certificate on /required) ends here, not in the
// renegotiate callback. Node's default would try to write a 400 on the dead socket.
server.on("clientError", (error, socket) => {
  console.log(`client error: ${error.code ?? ""} ${error.message}`);
  socket.destroy();
});

server.listen(Number(options.port), "127.0.0.1", () => {
  console.log(`listening on ${server.address().port}`);
});
