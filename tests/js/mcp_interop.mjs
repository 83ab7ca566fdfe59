// Interop driver: the official TypeScript MCP SDK (legacy era: initialize, GET stream,
// resources/subscribe) against a live colaflow-mcp. Driven by tests/mcp/test_mcp_typescript.py:
// it prints one JSON object per line on stdout and, where told to, waits for a line on stdin.
//
// usage: node mcp_interop.mjs <mcpUrl> <apiKey> <scenario> [args...]
//   flow [--count N] [--wait-before-subscribe]
//       propose N issues, subscribe to the first, report, wait for its update, read it
//   probe <uri>...
//       try to read and subscribe to each URI; report the errors

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ResourceUpdatedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";
import { createInterface } from "node:readline";

const [url, apiKey, scenario, ...rest] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const nextLine = async () => (await lines.next()).value;

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${apiKey}` } },
});
const client = new Client({ name: "colaflow-interop", version: "1.0.0" });

const updated = [];
let wake = () => {};
client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
  updated.push(n.params.uri);
  wake();
});
const waitFor = (uri) =>
  new Promise((resolve) => {
    const check = () => (updated.includes(uri) ? resolve() : (wake = check));
    check();
  });

await client.connect(transport);
say({ step: "connected", protocolVersion: transport.protocolVersion ?? null,
      capabilities: client.getServerCapabilities() });

if (scenario === "flow") {
  const count = rest.includes("--count") ? Number(rest[rest.indexOf("--count") + 1]) : 1;
  const proposals = [];
  for (let i = 0; i < count; i++) {
    const r = await client.callTool({
      name: "create_issue",
      arguments: { project_key: "WEB", title: `From TypeScript #${i + 1}`, expires_in_seconds:
        rest.includes("--expires") ? Number(rest[rest.indexOf("--expires") + 1]) : undefined },
    });
    if (r.isError) throw new Error(JSON.stringify(r.content));
    proposals.push(r.structuredContent);
  }
  say({ step: "proposed", proposals, text: null });
  if (rest.includes("--wait-before-subscribe")) await nextLine();
  const uri = proposals[0].resourceUri;
  await client.subscribeResource({ uri });
  say({ step: "subscribed", uri });
  await waitFor(uri);
  const read = await client.readResource({ uri });
  say({ step: "final", updated, change: JSON.parse(read.contents[0].text) });
} else if (scenario === "probe") {
  for (const uri of rest) {
    const result = { uri };
    for (const [name, call] of [
      ["read", () => client.readResource({ uri })],
      ["subscribe", () => client.subscribeResource({ uri })],
    ]) {
      try {
        await call();
        result[name] = "ok";
      } catch (e) {
        result[name] = { code: e.code ?? null, message: String(e.message) };
      }
    }
    say({ step: "probed", ...result });
  }
} else {
  throw new Error(`unknown scenario ${scenario}`);
}

await transport.terminateSession();
await client.close();
process.exit(0);
