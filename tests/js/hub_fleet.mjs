// Many @microsoft/signalr connections in one node process, for the load-balancer tests.
//
// argv: HUB_URL
// Commands on stdin, one JSON object per line:
//   {"cmd":"open","name":N,"key":K,"transport":"WebSockets|ServerSentEvents|LongPolling",
//    "spelling":"factory|query"}
//       "factory": accessTokenFactory, as documented (node sends the key as a header on
//       negotiate, sends and WebSockets; the SSE GET carries it as ?access_token=);
//       "query": the key only in the hub URL's query string, on every request.
//       Optional "stateful": true (WebSockets): .withStatefulReconnect().
//       -> {"name":N,"state":"connected","connectionId":…}
//   {"cmd":"subscribe","name":N,"id":ID}  -> {"name":N,"subscribed":ID,"status":…}
//   {"cmd":"where"}  -> {"where":{name: connectionId, …}}
//   {"cmd":"drop","name":N}  drops N's WebSocket abruptly (no close handshake) -> {"name":N,"dropped":true}
//   {"cmd":"stop"}   stops every connection and exits
// Events: {"name":N,"event":"PendingChangeApproved","id":ID}; lifecycle:
//   {"name":N,"state":"reconnecting"|"reconnected"|"closed", …}; every connection token a
//   negotiate returned: {"token":…} (for the log checks).
import * as signalR from "@microsoft/signalr";
import * as readline from "node:readline";

const [hubUrl] = process.argv.slice(2);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// Reports every connection token a negotiate hands out; otherwise the default client.
class RecordingHttpClient extends signalR.DefaultHttpClient {
  async send(request) {
    const response = await super.send(request);
    if (request.url.includes("/negotiate") && typeof response.content === "string") {
      try {
        const body = JSON.parse(response.content);
        if (body.connectionToken) out({ token: body.connectionToken });
      } catch {
        // not JSON: nothing to record
      }
    }
    return response;
  }
}

const connections = new Map(); // name -> {connection, waiting}

async function open({ name, key, transport, spelling, stateful }) {
  const options = {
    transport: signalR.HttpTransportType[transport],
    httpClient: new RecordingHttpClient(signalR.NullLogger.instance),
  };
  let url = hubUrl;
  if (spelling === "query") url += `?access_token=${encodeURIComponent(key)}`;
  else options.accessTokenFactory = () => key;
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(url, options)
    .withAutomaticReconnect() // the default policy: 0, 2, 10, 30 s
    .configureLogging(signalR.LogLevel.None);
  if (stateful) builder = builder.withStatefulReconnect();
  const connection = builder.build();
  const entry = { connection, waiting: new Set() };
  connections.set(name, entry);
  for (const event of ["PendingChangeApproved", "PendingChangeRejected", "PendingChangeExpired"]) {
    connection.on(event, (n) => {
      entry.waiting.delete(n.pendingChangeId);
      out({ name, event, id: n.pendingChangeId });
    });
  }
  connection.onreconnecting((err) => out({ name, state: "reconnecting", error: String(err) }));
  connection.onreconnected(async () => {
    out({ name, state: "reconnected", connectionId: connection.connectionId });
    for (const id of [...entry.waiting]) await subscribe(name, id);
  });
  connection.onclose((err) => out({ name, state: "closed", error: err ? String(err) : null }));
  await connection.start();
  out({ name, state: "connected", connectionId: connection.connectionId });
}

async function subscribe(name, id) {
  const entry = connections.get(name);
  try {
    const snapshot = await entry.connection.invoke("SubscribeToPendingChange", id);
    if (snapshot.status === "Pending") entry.waiting.add(id);
    out({ name, subscribed: id, status: snapshot.status });
  } catch (err) {
    out({ name, subscribeError: id, error: String(err.message || err) });
  }
}

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const msg = JSON.parse(line);
  try {
    if (msg.cmd === "open") await open(msg);
    else if (msg.cmd === "subscribe") await subscribe(msg.name, msg.id);
    else if (msg.cmd === "where") {
      const where = {};
      for (const [name, { connection }] of connections) where[name] = connection.connectionId;
      out({ where });
    } else if (msg.cmd === "drop") {
      // What a network failure does: the socket is gone, no close handshake.
      const ws = connections.get(msg.name).connection.connection.transport._webSocket;
      ws.terminate ? ws.terminate() : ws.close();
      out({ name: msg.name, dropped: true });
    } else if (msg.cmd === "stop") {
      await Promise.all([...connections.values()].map(({ connection }) => connection.stop()));
      break;
    }
  } catch (err) {
    out({ name: msg.name ?? null, error: String(err.message || err) });
  }
}
process.exit(0);
