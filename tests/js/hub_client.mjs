// Test driver for the official @microsoft/signalr client against /hubs/mcp.
//
// argv: HUB_URL CREDENTIAL TRANSPORT (WebSockets|ServerSentEvents|LongPolling) [stateful]
// (CREDENTIAL: an agent's API key, or a reviewer token for the review queue)
// Prints one JSON object per line on stdout; reads commands, one JSON object per line:
//   {"cmd":"subscribe","id":…}     -> {"subscribed":id,"status":…} or {"subscribeError":id,"error":…}
//   {"cmd":"queue"}                -> {"queue":[id…]} or {"queueError":…}  (SubscribeToReviewQueue)
//   {"cmd":"roundtrip","n":…}      -> {"roundtrip":n}   (an invocation, to order the stream)
//   {"cmd":"kill"}                 -> drops the socket abruptly (automatic reconnect follows)
//   {"cmd":"stop"}                 -> stops the connection and exits
// Events: {"event":"PendingChangeApproved","payload":{…},"at":ms} (and PendingChangeCreated on
// the review queue); lifecycle: {"state":…}.
// ("at" is the receipt time, epoch milliseconds, for benchmarks/hub_latency.py.)
import * as signalR from "@microsoft/signalr";
import * as readline from "node:readline";

const [url, apiKey, transportName, mode] = process.argv.slice(2);
const transport = signalR.HttpTransportType[transportName];
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

let builder = new signalR.HubConnectionBuilder()
  .withUrl(url, { accessTokenFactory: () => apiKey, transport })
  .withAutomaticReconnect([1000, 1000, 1000, 1000, 1000])
  .configureLogging(signalR.LogLevel.Warning);
if (mode === "stateful") builder = builder.withStatefulReconnect();
const connection = builder.build();

const waiting = new Set();
for (const name of ["PendingChangeApproved", "PendingChangeRejected", "PendingChangeExpired",
                    "PendingChangeCreated"]) {
  connection.on(name, (n) => {
    const at = performance.timeOrigin + performance.now();  // wall clock, sub-ms
    if (name !== "PendingChangeCreated") waiting.delete(n.pendingChangeId);
    out({ event: name, payload: n, at });
  });
}
connection.onreconnecting(() => out({ state: "reconnecting" }));
connection.onreconnected(async () => {
  out({ state: "reconnected" });
  for (const id of [...waiting]) {
    await subscribe(id);
  }
});
connection.onclose((err) => out({ state: "closed", error: err ? String(err) : null }));

async function subscribe(id) {
  try {
    const snapshot = await connection.invoke("SubscribeToPendingChange", id);
    if (snapshot.status === "Pending") waiting.add(id);
    out({ subscribed: id, status: snapshot.status });
  } catch (err) {
    out({ subscribeError: id, error: String(err.message || err) });
  }
}

await connection.start();
out({ state: "connected", transport: transportName });

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const msg = JSON.parse(line);
  if (msg.cmd === "subscribe") {
    await subscribe(msg.id);
  } else if (msg.cmd === "queue") {
    try {
      const { pending } = await connection.invoke("SubscribeToReviewQueue");
      out({ queue: pending.map((c) => c.id) });
    } catch (err) {
      out({ queueError: String(err.message || err) });
    }
  } else if (msg.cmd === "roundtrip") {
    await connection.invoke("UnsubscribeFromPendingChange", "00000000-0000-4000-8000-000000000000");
    out({ roundtrip: msg.n });
  } else if (msg.cmd === "kill") {
    // Reach into the transport the way a network failure would: no close handshake.
    const ws = connection.connection.transport._webSocket;
    ws.terminate ? ws.terminate() : ws.close();
    out({ killed: true });
  } else if (msg.cmd === "stop") {
    await connection.stop();
    break;
  }
}
process.exit(0);
