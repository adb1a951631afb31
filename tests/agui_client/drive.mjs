// Drives the stock AG-UI client (@ag-ui/client HttpAgent, as CopilotKit uses it) against a netra
// server, for tests/gateway/test_agui_client.py. Reads a scenario (JSON) on stdin, writes what the
// client ended up with (JSON) on stdout.
//
// Scenario: {"base": "http://127.0.0.1:PORT", "token": "...", "threadId": "...",
//            "steps": [step, ...]}
// A step is one of
//   {"kind": "run", "runId", "add": [messages to add first], "tools", "forwardedProps",
//    "resume", "abortOn": "<event type>"}   -> agent.runAgent(...) through POST /agui
//   {"kind": "follow", "lastEventId": "k", "untilId": "k"}  -> the same client's pipeline over
//    GET /agui/events?threadId= (a resumed stream, or a replay), read up to the frame with id
//    "untilId" (or to the first RUN_FINISHED/RUN_ERROR without one)
// Each step's result: {"error", "messages" (agent.messages after it), "pendingInterrupts",
// "result", "raw" (the SSE text the server sent)}. Each "follow" uses a fresh agent (a new page).
import { HttpAgent } from "@ag-ui/client";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const scenario = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const auth = { Authorization: `Bearer ${scenario.token}` };

// A fetch that keeps the raw SSE text of every response (for ag-ui-validate) and, for "follow",
// turns the agent's POST into GET /agui/events and ends the body after the frame it waits for.
function recordingFetch(record, follow) {
  return async (url, init) => {
    let response;
    if (follow) {
      const headers = { ...auth, Accept: "text/event-stream" };
      if (follow.lastEventId !== undefined) headers["Last-Event-ID"] = follow.lastEventId;
      const target = `${scenario.base}/agui/events?threadId=${encodeURIComponent(scenario.threadId)}`;
      response = await fetch(target, { method: "GET", headers, signal: init.signal });
    } else {
      response = await fetch(url, init);
    }
    if (!response.ok || !response.body) return response;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    const body = new ReadableStream({
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
          return;
        }
        const text = decoder.decode(value, { stream: true });
        record.raw += text;
        controller.enqueue(value);
        if (follow) {
          pending += text;
          const frames = pending.split("\n\n");
          pending = frames.pop();
          for (const frame of frames) {
            const id = /^id: (.*)$/m.exec(frame)?.[1];
            const data = /^data: (.*)$/m.exec(frame)?.[1];
            const type = data ? JSON.parse(data).type : undefined;
            const last = follow.untilId !== undefined
              ? id === follow.untilId
              : type === "RUN_FINISHED" || type === "RUN_ERROR";
            if (last) {
              controller.close();
              reader.cancel().catch(() => {});
              return;
            }
          }
        }
      },
      cancel() {
        reader.cancel().catch(() => {});
      },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
}

function newAgent(record, follow) {
  return new HttpAgent({
    url: `${scenario.base}/agui`,
    headers: auth,
    threadId: scenario.threadId,
    fetch: recordingFetch(record, follow),
  });
}

const results = [];
const mainRecord = { raw: "" };
const agent = newAgent(mainRecord, null);
for (const step of scenario.steps) {
  const record = step.kind === "follow" ? { raw: "" } : mainRecord;
  mainRecord.raw = "";
  const target = step.kind === "follow" ? newAgent(record, step) : agent;
  for (const message of step.add ?? []) target.addMessage(message);
  const out = { error: null, result: null };
  try {
    const params = { runId: step.runId };
    if (step.tools) params.tools = step.tools;
    if (step.forwardedProps) params.forwardedProps = step.forwardedProps;
    if (step.resume) params.resume = step.resume;
    const subscriber = {
      onEvent({ event }) {
        if (step.abortOn && event.type === step.abortOn) setTimeout(() => target.abortRun(), 0);
      },
    };
    const run = await target.runAgent(params, subscriber);
    out.result = run.result ?? null;
  } catch (error) {
    out.error = String(error?.message ?? error);
  }
  out.messages = target.messages;
  out.pendingInterrupts = target.pendingInterrupts ?? [];
  out.raw = record.raw;
  results.push(out);
}
process.stdout.write(JSON.stringify(results));
