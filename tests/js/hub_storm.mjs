// The reconnect storm's load generator in Node.js (`python -m benchmarks storm --client node`).
//
// A Python WebSocket client spends about as much CPU per connection as the server does, so
// on a shared machine a Python load generator measures itself. This one does the same
// wire work per client with the `ws` package (its frame parser and masking are cheap) in
// one event loop, so the wall time says something about the server.
//
// stdin: one JSON object {"kind": "hub"|"sio", "port": P, "apiKey": K, "ids": [...],
//   "concurrency": N, "negotiate": true, "pingSeconds": 10}
// Every id is one client, all started at once (at most `concurrency` set-ups in flight):
//   hub: POST /hubs/mcp/negotiate?negotiateVersion=1 (Authorization: Bearer KEY, a
//        connection of its own, as separate machines would), the WebSocket
//        /hubs/mcp?id=TOKEN&access_token=KEY (the browser client's spelling), the SignalR
//        JSON handshake, SubscribeToPendingChange(id) and its completion.
//   sio: the Engine.IO 4 WebSocket /socket.io/?EIO=4&transport=websocket&access_token=KEY,
//        the Socket.IO connect ("40"), `subscribe` (id) and its ack.
// stdout: one line {"ready", "failed", "errors", "connect_s", "client_cpu_s"} once every
// client is subscribed or failed; then clients stay open (answering/sending keep-alive)
// until stdin closes, when every socket is closed and the process exits.
import * as http from "node:http";
import * as readline from "node:readline";
import WebSocket from "ws";

const RS = "\x1e";
const HANDSHAKE = JSON.stringify({ protocol: "json", version: 1 }) + RS;
const PING = JSON.stringify({ type: 6 }) + RS;

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function negotiate(port, apiKey) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: "127.0.0.1", port, method: "POST", agent: false,
        path: "/hubs/mcp/negotiate?negotiateVersion=1",
        headers: { Authorization: `Bearer ${apiKey}`, "Content-Length": "0" },
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          if (res.statusCode !== 200) {
            reject(new Error(`negotiate: ${res.statusCode}`));
            return;
          }
          try {
            resolve(JSON.parse(Buffer.concat(chunks).toString()).connectionToken);
          } catch (e) {
            reject(e);
          }
        });
      },
    );
    req.on("error", reject);
    req.end();
  });
}

// One client's conversation: `step(text, ws)` sees every received message (handlers are
// in place before the socket opens: a server that speaks first, as Engine.IO does, can
// have its first frame in the same packet as the upgrade response) and returns true once
// the client is subscribed; `first` is what the client sends once open.
function converse(url, sockets, first, step) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  return new Promise((resolve, reject) => {
    ws.on("message", (data) => {
      try {
        if (step(data.toString(), ws)) resolve(ws);
      } catch (e) {
        reject(e);
      }
    });
    ws.once("open", () => {
      sockets.push(ws);
      if (first !== null) ws.send(first);
    });
    ws.once("error", reject);
    ws.once("unexpected-response", (_req, res) => reject(new Error(`upgrade: ${res.statusCode}`)));
    ws.once("close", () => reject(new Error("socket closed")));
  });
}

// SignalR: handshake, then one subscription; resolves on its completion.
async function hubClient(cfg, id, sockets) {
  let url = `ws://127.0.0.1:${cfg.port}/hubs/mcp?access_token=${encodeURIComponent(cfg.apiKey)}`;
  if (cfg.negotiate !== false) {
    url += `&id=${encodeURIComponent(await negotiate(cfg.port, cfg.apiKey))}`;
  }
  let buffer = "";
  let stage = 0; // 0: handshake sent, 1: subscribe sent, 2: subscribed
  return converse(url, sockets, HANDSHAKE, (text, ws) => {
    buffer += text;
    const parts = buffer.split(RS);
    buffer = parts.pop();
    for (const raw of parts) {
      const msg = JSON.parse(raw);
      if (stage === 0) {
        if (msg.error) throw new Error(`handshake: ${msg.error}`);
        stage = 1;
        ws.send(JSON.stringify({
          type: 1, invocationId: "0", target: "SubscribeToPendingChange", arguments: [id],
        }) + RS);
      } else if (stage === 1) {
        if (msg.type === 3 && msg.invocationId === "0") {
          if (msg.error) throw new Error(msg.error);
          stage = 2;
          return true;
        }
        if (msg.type === 7) throw new Error(`closed: ${msg.error}`);
      }
    }
    return false;
  });
}

// Socket.IO 5 over Engine.IO 4: open packet, connect, one `subscribe` with an ack.
async function sioClient(cfg, id, sockets) {
  const url = `ws://127.0.0.1:${cfg.port}/socket.io/?EIO=4&transport=websocket` +
    `&access_token=${encodeURIComponent(cfg.apiKey)}`;
  let stage = 0; // 0: waiting for the open packet, 1: connect sent, 2: subscribe sent
  return converse(url, sockets, null, (text, ws) => {
    if (text === "2") {
      ws.send("3");
    } else if (stage === 0 && text.startsWith("0")) {
      stage = 1;
      ws.send("40");
    } else if (stage === 1 && text.startsWith("40")) {
      stage = 2;
      ws.send("420" + JSON.stringify(["subscribe", id]));
    } else if (stage === 2 && text.startsWith("430")) {
      stage = 3;
      return true;
    } else if (text.startsWith("44")) {
      throw new Error(`connect refused: ${text}`);
    }
    return false;
  });
}

async function main() {
  const rl = readline.createInterface({ input: process.stdin });
  const lines = rl[Symbol.asyncIterator]();
  const cfg = JSON.parse((await lines.next()).value);
  const client = cfg.kind === "sio" ? sioClient : hubClient;
  const sockets = [];
  const errors = [];
  let ready = 0;
  let failed = 0;
  let next = 0;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const pinger = cfg.kind === "sio" ? null : setInterval(() => {
    for (const ws of sockets) if (ws.readyState === WebSocket.OPEN) ws.send(PING);
  }, 1000 * (cfg.pingSeconds ?? 10));
  async function lane() {
    while (next < cfg.ids.length) {
      const id = cfg.ids[next++];
      try {
        await client(cfg, id, sockets);
        ready += 1;
      } catch (e) {
        failed += 1;
        if (errors.length < 20) errors.push(String(e.message ?? e).slice(0, 300));
      }
    }
  }
  const lanes = Math.max(1, Math.min(cfg.concurrency ?? 2000, cfg.ids.length));
  await Promise.all(Array.from({ length: lanes }, lane));
  const connectS = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  out({
    ready, failed, errors, connect_s: Math.round(connectS * 1000) / 1000,
    client_cpu_s: Math.round((cpu.user + cpu.system) / 1000) / 1000,
  });
  for await (const _ of lines) {
    // nothing to do until stdin closes
  }
  if (pinger) clearInterval(pinger);
  for (const ws of sockets) ws.terminate();
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write(String(e?.stack ?? e) + "\n");
  process.exit(1);
});
