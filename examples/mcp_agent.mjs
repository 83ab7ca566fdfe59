// An agent that proposes a ColaFlow change over MCP and waits for the human decision.
//
// Uses the official TypeScript SDK (@modelcontextprotocol/sdk), which speaks the 2025
// protocol era: initialize, resources/subscribe, and notifications/resources/updated on the
// session's GET stream -- the same path Claude Desktop takes through mcp-remote.
//
//   cd examples && npm ci
//   export COLAFLOW_API_KEY=cola_...        # colaflow-mcp keys create --tenant acme
//   node mcp_agent.mjs --project WEB --title "Fix the login page"
//
// Then approve or reject it as a reviewer (REST, see docs/mcp.md); the agent prints the
// outcome the moment it is decided.
//
// It does not rely on the GET stream alone: the SDK reconnects a dropped stream twice (after
// the server's retry: hint, 3 s each) and then gives up for the rest of the session, reporting
// "Maximum reconnection attempts (2) exceeded." to client.onerror. So the agent reads the
// change itself when that happens and whenever --recheck seconds (default 60) pass without an
// update; a read that fails (the network is still down) is tried again 3 s later.
//
// Behind a load balancer (docs/scale-out.md) the session lives on one server instance. If
// that instance goes away, the session's next request (often the SDK's own attempt to
// reopen the GET stream) is answered 404 "Session not found" by another instance. The agent
// then starts a new session (on a live instance), subscribes again and reads the change.
// Reads and subscribes are safe to repeat; the proposal is not (a repeated create_issue
// would propose twice), so a proposal that fails is reported, not retried.
//
// A key the server refuses (401: mistyped, or revoked while the agent waits) ends the agent
// with the server's message and exit status 2: connecting again cannot help.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ResourceUpdatedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";
import { parseArgs } from "node:util";

const USAGE = "usage: node mcp_agent.mjs [--url URL] [--project KEY] [--title TEXT] " +
  "[--expires SECONDS] [--recheck SECONDS]   (COLAFLOW_API_KEY: an agent's API key)";
let args;
try {
  args = parseArgs({
    options: {
      url: { type: "string", default: process.env.COLAFLOW_MCP_URL ?? "http://127.0.0.1:8000/mcp" },
      project: { type: "string", default: "WEB" },
      title: { type: "string", default: "Fix the login page" },
      expires: { type: "string" },
      recheck: { type: "string", default: "60" },
      help: { type: "boolean", short: "h" },
    },
  }).values;
} catch (error) { // an unknown option or a missing value: say so, as mcp_agent.py does
  console.error(`${USAGE}\nmcp_agent.mjs: error: ${error.message}`);
  process.exit(2);
}
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}
const apiKey = process.env.COLAFLOW_API_KEY;
if (!apiKey) {
  console.error("set COLAFLOW_API_KEY (colaflow-mcp keys create --tenant SLUG)");
  process.exit(2);
}

// Every wake-up (an update, the stream given up, the session gone, a recheck timer) leads
// to reading the change, which is the truth.
let uri;
let wake = () => {};
let client;
let transport;

async function openSession() {
  transport = new StreamableHTTPClientTransport(new URL(args.url), {
    requestInit: { headers: { Authorization: `Bearer ${apiKey}` } },
  });
  client = new Client({ name: "colaflow-example-agent", version: "1.0.0" });
  // Registered before subscribing, so an update for an already-decided change (sent at
  // once) is not missed.
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
    if (n.params.uri === uri) wake();
  });
  client.onerror = (error) => {
    if (error?.code === 404) {
      wake(); // the server no longer knows the session: the read fails, and we start anew
    } else if (String(error?.message).startsWith("SSE stream disconnected")) {
      // The SDK reopens the stream after the server's retry: hint (3 s); reading now finds
      // out at once whether the session is still there (if its server went away, the read
      // is answered 404 and we start anew).
      wake();
    } else if (String(error?.message).includes("Maximum reconnection attempts")) {
      console.log("GET stream given up by the SDK; reading the change instead");
      wake();
    }
  };
  await client.connect(transport);
}

// A new session that watches the change (the old one is gone with its server instance).
async function resubscribe() {
  await client.close().catch(() => {});
  await openSession();
  await client.subscribeResource({ uri });
}
const recheckMs = Number(args.recheck) * 1000;
const nextWakeUp = (ms = recheckMs) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });

// A key the server refuses (401: mistyped, or revoked while we wait) cannot get better by
// connecting again: say so and stop with exit status 2.
function stopIfRefused(error) {
  if (error?.code !== 401) return;
  let message = String(error.message);
  try {
    message = JSON.parse(message.slice(message.indexOf("{"))).message;
  } catch {} // not the server's JSON body: keep the SDK's words
  console.log(`the server refused the API key: ${message} ` +
    "(COLAFLOW_API_KEY: colaflow-mcp keys create --tenant SLUG prints one)");
  process.exit(2);
}

async function readChange() {
  const read = await client.readResource({ uri });
  return JSON.parse(read.contents[0].text);
}

let result;
try {
  await openSession();
  result = await client.callTool({
    name: "create_issue",
    arguments: {
      project_key: args.project,
      title: args.title,
      ...(args.expires ? { expires_in_seconds: Number(args.expires) } : {}),
    },
  });
} catch (error) { // nothing proposed yet (or unknown): say why, do not retry
  stopIfRefused(error);
  console.log(`could not propose: ${error?.message ?? error} (is the server running at ${args.url}?)`);
  process.exit(1);
}
if (result.isError) {
  console.log(`proposal refused: ${result.content[0]?.text}`);
  process.exit(2);
}
const proposal = result.structuredContent;
uri = proposal.resourceUri;
console.log(`proposed: ${proposal.summary}`);
console.log(`pending change: ${proposal.pendingChangeId}  (${uri})`);

let wokenUp = nextWakeUp(); // armed before subscribing: a decided change is reported at once
await client.subscribeResource({ uri });
console.log("waiting for a reviewer (resources/subscribe) ...");
let change;
let lastReopen = 0;
for (;;) {
  await wokenUp;
  wokenUp = nextWakeUp();
  try {
    change = await readChange();
  } catch (error) {
    stopIfRefused(error);
    if (error?.code === 404) {
      // At once, but not in a loop (a proxy that misroutes sessions would make one).
      const again = Date.now() - lastReopen < 30_000;
      lastReopen = Date.now();
      console.log(`session ended by the server; starting a new one${again ? " in 3 s" : ""}`);
      if (again) await new Promise((resolve) => setTimeout(resolve, 3000));
      try {
        await resubscribe();
        wokenUp = Promise.resolve(); // read at once: it may have been decided meanwhile
      } catch (again) {
        stopIfRefused(again);
        console.log(`could not start a new session (${again.message}); trying again in 3 s`);
        wokenUp = nextWakeUp(Math.min(recheckMs, 3000));
      }
      continue;
    }
    // Most likely the network is still down: try again soon rather than at the next recheck.
    console.log(`could not read the change (${error.message}); trying again in 3 s`);
    wokenUp = nextWakeUp(Math.min(recheckMs, 3000));
    continue;
  }
  if (change.status !== "Pending") break;
}
if (change.status === "Approved") {
  const r = change.executionResult ?? {};
  console.log(
    `decision: Approved by ${change.decidedBy}; ` +
      (r.success ? `executed, ${change.entityType.toLowerCase()} ${r.entityId}` : `but execution failed: ${r.error}`),
  );
} else if (change.status === "Rejected") {
  console.log(`decision: Rejected by ${change.decidedBy}: ${change.reason}`);
} else {
  console.log(`decision: ${change.status}`);
}

await transport.terminateSession().catch(() => {}); // the session may be gone already
await client.close();
process.exit(change.status === "Approved" ? 0 : 1);
