// A Node agent that waits for human decisions on its pending changes over the hub.
//
//   cd examples && npm ci                  # @microsoft/signalr, pinned in package.json
//   COLAFLOW_URL=http://127.0.0.1:8000 COLAFLOW_API_KEY=cola_… \
//     node hub_agent.js <pendingChangeId> [<pendingChangeId> …]
//
// Prints one JSON line per decision and exits once every change is decided. It survives
// dropped connections: the client reconnects by itself, and on reconnect the agent
// subscribes again to what is still undecided; a decision made while it was away is
// pushed at once, exactly once.
// Optional: COLAFLOW_TRANSPORT=WebSockets|ServerSentEvents|LongPolling to force one.
"use strict";
const signalR = require("@microsoft/signalr");

const baseUrl = (process.env.COLAFLOW_URL || "http://127.0.0.1:8000").replace(/\/$/, "");
const apiKey = process.env.COLAFLOW_API_KEY;
const ids = process.argv.slice(2);
if (!apiKey || ids.length === 0) {
  console.error("usage: COLAFLOW_API_KEY=cola_… node hub_agent.js <pendingChangeId>…");
  process.exit(2);
}

const waiting = new Set(ids);
const options = { accessTokenFactory: () => apiKey };
if (process.env.COLAFLOW_TRANSPORT) {
  options.transport = signalR.HttpTransportType[process.env.COLAFLOW_TRANSPORT];
}
const connection = new signalR.HubConnectionBuilder()
  .withUrl(`${baseUrl}/hubs/mcp`, options)
  .withAutomaticReconnect()
  .configureLogging(signalR.LogLevel.Warning)
  .build();

// The id whose SubscribeToPendingChange is awaiting its result, and decisions of it that
// arrived meanwhile: for a change already decided the event can come in the same frame as
// the result, and is reported after the "watching" line.
let subscribing = null;
let held = [];

function report(kind, n) {
  if (!waiting.delete(n.pendingChangeId)) return;  // not ours, or already reported
  const line = { event: kind, pendingChangeId: n.pendingChangeId, status: n.status };
  if (kind === "PendingChangeApproved") line.executionResult = n.executionResult;
  if (kind === "PendingChangeRejected") line.reason = n.reason;
  console.log(JSON.stringify(line));
  if (waiting.size === 0) connection.stop().then(() => process.exit(0));
}

function decided(kind) {
  return (n) => {
    if (n.pendingChangeId === subscribing) held.push(() => report(kind, n));
    else report(kind, n);
  };
}
connection.on("PendingChangeApproved", decided("PendingChangeApproved"));
connection.on("PendingChangeRejected", decided("PendingChangeRejected"));
connection.on("PendingChangeExpired", decided("PendingChangeExpired"));

async function subscribeAll() {
  for (const id of [...waiting]) {
    subscribing = id;
    try {
      const snapshot = await connection.invoke("SubscribeToPendingChange", id);
      console.error(`watching ${id} (${snapshot.status}): ${snapshot.summary || snapshot.toolName}`);
    } catch (err) {
      // Unknown, foreign or malformed id: nothing will ever arrive for it.
      console.error(`cannot watch ${id}: ${err.message || err}`);
      waiting.delete(id);
    } finally {
      subscribing = null;
      for (const deliver of held.splice(0)) deliver();
    }
  }
  if (waiting.size === 0) await connection.stop().then(() => process.exit(1));
}

connection.onreconnecting((err) => console.error(`connection lost (${err || "closed"}); reconnecting`));
connection.onreconnected(() => {
  console.error("reconnected; subscribing again");
  return subscribeAll();
});
connection.onclose((err) => {
  if (waiting.size > 0) {
    console.error(`connection closed for good: ${err || "no error"}`);
    process.exit(1);
  }
});

(async () => {
  await connection.start();
  await subscribeAll();
})().catch((err) => {
  console.error(`could not connect: ${err.message || err}`);
  process.exit(1);
});
