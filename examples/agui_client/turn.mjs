// One turn of chat against a netra server, from the stock AG-UI client (what CopilotKit runs).
//
//   npm ci
//   NETRA_URL=http://127.0.0.1:8000 NETRA_TOKEN=$(netra-actors token alice --secret ...) \
//     node turn.mjs "add 2 and 40 please"
//
// Prints the text as it streams, then the conversation the client shows (agent.messages).
import { HttpAgent } from "@ag-ui/client";

const url = process.env.NETRA_URL ?? "http://127.0.0.1:8000";
const token = process.env.NETRA_TOKEN;
if (!token) throw new Error("set NETRA_TOKEN (netra-actors token USER --secret SECRET)");

const agent = new HttpAgent({
  url: `${url}/agui`, // POST /agui: one turn, as a stream of AG-UI events
  headers: { Authorization: `Bearer ${token}` },
  threadId: process.env.NETRA_THREAD ?? "main", // the netra thread
});
agent.addMessage({
  id: `m-${Date.now()}`, // netra keeps the client's id: a retry never commits it twice
  role: "user",
  content: process.argv[2] ?? "hello from AG-UI",
});
await agent.runAgent(
  { forwardedProps: { onDisconnect: "cancel" } }, // closing the stream stops the run
  {
    onTextMessageContentEvent({ event }) {
      process.stderr.write(event.delta);
    },
  },
);
process.stderr.write("\n");
process.stdout.write(JSON.stringify(agent.messages, null, 2) + "\n");
