// bad_input.mjs — sends malformed requests to a running emoe server and checks
// each gets the right 4xx with an OpenAI error object, while a well-formed
// stream runs concurrently and must complete unharmed (its text equals a
// clean re-run at temperature 0). Uses only Node's built-ins (fetch, net).
// Usage: EMOE_BASE=http://127.0.0.1:PORT EMOE_KEY=k EMOE_VOCAB=N EMOE_CTX=N node bad_input.mjs
import net from "node:net";

const base = process.env.EMOE_BASE;
const key = process.env.EMOE_KEY;
const vocab = Number(process.env.EMOE_VOCAB);
const ctx = Number(process.env.EMOE_CTX);
const url = new URL(base);
let fails = 0, n = 0;
const auth = { Authorization: `Bearer ${key}`, "Content-Type": "application/json" };

async function req(method, path, body, headers = auth) {
  const r = await fetch(base + path, { method, headers, body, signal: AbortSignal.timeout(20000) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, json, text, headers: r.headers };
}

// Raw bytes over a socket (for things fetch won't send); resolves with the
// status code, or 0 when the server closed without a response.
function raw(bytes, { timeoutMs = 10000, holdOpen = false } = {}) {
  return new Promise((resolve) => {
    const s = net.connect(Number(url.port), url.hostname);
    let data = "";
    const t0 = Date.now();
    const timer = setTimeout(() => { s.destroy(); resolve({ status: -1, ms: Date.now() - t0, data }); }, timeoutMs);
    s.on("connect", () => { s.write(bytes); if (!holdOpen) s.end(); });
    s.on("data", (d) => { data += d.toString("latin1"); });
    s.on("error", () => {});
    s.on("close", () => {
      clearTimeout(timer);
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(data);
      resolve({ status: m ? Number(m[1]) : 0, ms: Date.now() - t0, data });
    });
  });
}

function expect(what, got, status, param) {
  n++;
  const isErr = got.json && got.json.error && typeof got.json.error.message === "string" && typeof got.json.error.type === "string" &&
                "param" in got.json.error && "code" in got.json.error;
  let good = got.status === status && (status >= 500 || got.json === undefined || isErr || got.json === null && got.text === "");
  if (got.json !== null && got.json !== undefined && !isErr) good = false;
  if (param !== undefined && (!isErr || got.json.error.param !== param)) good = false;
  console.log(`${good ? "ok  " : "FAIL"} ${what}: ${got.status}${got.json?.error ? " " + JSON.stringify(got.json.error.message).slice(0, 90) : ""}`);
  if (!good) fails++;
}

// The concurrent well-formed stream.
const streamBody = { prompt: "The capital of France is", max_tokens: 600, temperature: 0, ignore_eos: true, stream: true };
const streamDone = (async () => {
  const r = await fetch(base + "/v1/completions", { method: "POST", headers: auth, body: JSON.stringify(streamBody), signal: AbortSignal.timeout(60000) });
  return await r.text();
})();

const C = "/v1/completions", CH = "/v1/chat/completions";
const ok = { prompt: "Hello", max_tokens: 2 };
const J = (o) => JSON.stringify(o);
const cases = [
  ["invalid JSON", C, "{", 400],
  ["JSON array body", C, "[]", 400],
  ["empty body", C, "", 400],
  ["null body", C, "null", 400],
  ["invalid UTF-8 in a string", C, Buffer.concat([Buffer.from('{"prompt":"a'), Buffer.from([0xff, 0xfe]), Buffer.from('","max_tokens":2}')]), 400],
  ["duplicate keys", C, '{"prompt":"a","prompt":"b"}', 400],
  ["deeply nested JSON", C, "[".repeat(5000) + "]".repeat(5000), 400],
  ["temperature is a string", C, J({ ...ok, temperature: "hot" }), 400, "temperature"],
  ["temperature 5", C, J({ ...ok, temperature: 5 }), 400, "temperature"],
  ["temperature -1", C, J({ ...ok, temperature: -1 }), 400, "temperature"],
  ["top_p 0", C, J({ ...ok, top_p: 0 }), 400, "top_p"],
  ["top_p 1.5", C, J({ ...ok, top_p: 1.5 }), 400, "top_p"],
  ["top_k 1.5", C, J({ ...ok, top_k: 1.5 }), 400, "top_k"],
  ["top_k is a string", C, J({ ...ok, top_k: "5" }), 400, "top_k"],
  ["min_p 2", C, J({ ...ok, min_p: 2 }), 400, "min_p"],
  ["max_tokens 0", C, J({ ...ok, max_tokens: 0 }), 400, "max_tokens"],
  ["max_tokens -5", C, J({ ...ok, max_tokens: -5 }), 400, "max_tokens"],
  ["max_tokens 1.5", C, J({ ...ok, max_tokens: 1.5 }), 400, "max_tokens"],
  ["max_tokens is a string", C, J({ ...ok, max_tokens: "10" }), 400, "max_tokens"],
  ["max_completion_tokens true", C, J({ ...ok, max_completion_tokens: true }), 400, "max_completion_tokens"],
  ["n = 17", C, J({ ...ok, n: 17 }), 400, "n"],
  ["unknown field", C, J({ ...ok, frobnicate: 1 }), 400, "frobnicate"],
  ["logit_bias value 101", C, J({ ...ok, logit_bias: { 5: 101 } }), 400, "logit_bias"],
  ["stream is a string", C, J({ ...ok, stream: "yes" }), 400, "stream"],
  ["stop is a number", C, J({ ...ok, stop: 5 }), 400, "stop"],
  ["five stop strings", C, J({ ...ok, stop: ["a", "b", "c", "d", "e"] }), 400, "stop"],
  ["stop holds a number", C, J({ ...ok, stop: ["a", 1] }), 400, "stop"],
  ["presence_penalty 3", C, J({ ...ok, presence_penalty: 3 }), 400, "presence_penalty"],
  ["frequency_penalty -3", C, J({ ...ok, frequency_penalty: -3 }), 400, "frequency_penalty"],
  ["seed is a string", C, J({ ...ok, seed: "x" }), 400, "seed"],
  ["seed 1.5", C, J({ ...ok, seed: 1.5 }), 400, "seed"],
  ["stream_options is a string", C, J({ ...ok, stream: true, stream_options: "x" }), 400, "stream_options"],
  ["stream_options without stream", C, J({ ...ok, stream_options: { include_usage: true } }), 400, "stream_options"],
  ["include_usage is a number", C, J({ ...ok, stream: true, stream_options: { include_usage: 1 } }), 400, "stream_options.include_usage"],
  ["task with spaces", C, J({ ...ok, task: "bad task!" }), 400, "task"],
  ["ignore_eos is a string", C, J({ ...ok, ignore_eos: "x" }), 400, "ignore_eos"],
  ["completions logprobs is a boolean", C, J({ ...ok, logprobs: true }), 400, "logprobs"],
  ["prompt missing", C, J({ max_tokens: 2 }), 400, "prompt"],
  ["prompt is a number", C, J({ prompt: 5 }), 400, "prompt"],
  ["prompt has a negative id", C, J({ prompt: [1, -1] }), 400, "prompt"],
  ["prompt id outside the vocabulary", C, J({ prompt: [1, vocab + 10] }), 400, "prompt"],
  ["prompt id = vocab", C, J({ prompt: [vocab] }), 400, "prompt"],
  ["batched prompts", C, J({ prompt: ["a", "b"] }), 400, "prompt"],
  ["empty id prompt", C, J({ prompt: [] }), 400, "prompt"],
  ["empty text prompt", C, J({ prompt: "" }), 400, "prompt"],
  ["prompt longer than the context", C, J({ prompt: Array(ctx + 5).fill(11) }), 400],
  ["max_tokens beyond the context", C, J({ prompt: "Hello", max_tokens: ctx }), 400, "max_tokens"],
  ["unknown model", C, J({ ...ok, model: "no-such-model" }), 404, "model"],
  ["model is a number", C, J({ ...ok, model: 5 }), 400, "model"],
  ["chat: messages missing", CH, J({ max_tokens: 2 }), 400, "messages"],
  ["chat: messages empty", CH, J({ messages: [] }), 400, "messages"],
  ["chat: messages is a string", CH, J({ messages: "hello" }), 400, "messages"],
  ["chat: unknown role", CH, J({ messages: [{ role: "wizard", content: "x" }] }), 400, "messages[0].role"],
  ["chat: content is a number", CH, J({ messages: [{ role: "user", content: 5 }] }), 400, "messages[0].content"],
  ["chat: image content part", CH, J({ messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }] }), 400, "messages[0].content"],
  ["tokenize: token-id prompt", "/tokenize", J({ prompt: [1, 2] }), 400, "prompt"],
  ["detokenize: id outside the vocabulary", "/detokenize", J({ tokens: [vocab] }), 400, "tokens"],
  ["detokenize: tokens missing", "/detokenize", J({}), 400, "tokens"],
];

for (const [what, path, body, status, param] of cases) expect(what, await req("POST", path, body), status, param);
// Context overflow carries the OpenAI code.
{
  const r = await req("POST", C, J({ prompt: Array(ctx + 5).fill(11) }));
  n++;
  const good = r.status === 400 && r.json?.error?.code === "context_length_exceeded";
  console.log(`${good ? "ok  " : "FAIL"} context overflow has code context_length_exceeded`);
  if (!good) fails++;
}
// Methods, paths, auth, sizes, headers.
expect("unknown path", await req("POST", "/v1/nope", J(ok)), 404);
expect("GET on a POST endpoint", await req("GET", C), 405);
expect("DELETE /v1/models", await req("DELETE", "/v1/models"), 405);
expect("missing API key", await req("POST", C, J(ok), { "Content-Type": "application/json" }), 401);
expect("wrong API key", await req("POST", C, J(ok), { Authorization: "Bearer not-the-key", "Content-Type": "application/json" }), 401);
expect("key as a prefix of the real one", await req("GET", "/v1/models", undefined, { Authorization: `Bearer ${key.slice(0, -1)}` }), 401);
expect("Basic auth instead of Bearer", await req("GET", "/v1/models", undefined, { Authorization: `Basic ${key}` }), 401);
expect("bad X-Emoe-Task header", await req("POST", C, J(ok), { ...auth, "X-Emoe-Task": "no spaces allowed" }), 400, "X-Emoe-Task");
expect("body over max_body (Content-Length)", await req("POST", C, J({ prompt: "x".repeat(70000) })), 413);
{
  // Chunked upload over max_body: refused with 413 once it passes the limit.
  const chunk = "x".repeat(8192);
  let body = "";
  for (let i = 0; i < 10; i++) body += chunk.length.toString(16) + "\r\n" + chunk + "\r\n";
  body += "0\r\n\r\n";
  const r = await raw(`POST ${C} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n` + body);
  n++;
  const good = r.status === 413;
  console.log(`${good ? "ok  " : "FAIL"} chunked body over max_body: ${r.status}`);
  if (!good) fails++;
}
{
  // Oversized request headers: refused by the HTTP layer.
  const r = await raw(`GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nX-Big: ${"a".repeat(100000)}\r\nConnection: close\r\n\r\n`);
  n++;
  const good = r.status === 431 || r.status === 413;
  console.log(`${good ? "ok  " : "FAIL"} oversized headers: ${r.status}`);
  if (!good) fails++;
}
{
  // Garbage request line.
  const r = await raw("BLAH\r\n\r\n");
  n++;
  const good = r.status === 400 || r.status === 0;
  console.log(`${good ? "ok  " : "FAIL"} garbage request line: ${r.status}`);
  if (!good) fails++;
}
{
  // Slow client (half a request line, then silence): the server closes the
  // connection after [server] connection_timeout (2 s in this test).
  const r = await raw("POST /v1/compl", { holdOpen: true, timeoutMs: 8000 });
  n++;
  const good = r.status !== -1 && r.ms < 7000;
  console.log(`${good ? "ok  " : "FAIL"} slow client closed after ${r.ms} ms (status ${r.status})`);
  if (!good) fails++;
}

// The concurrent stream finished cleanly and equals a clean greedy re-run.
const sse = await streamDone;
const events = sse.split("\n").filter((l) => l.startsWith("data: "));
const chunks = events.slice(0, -1).map((l) => JSON.parse(l.slice(6)));
const text = chunks.map((c) => c.choices[0]?.text ?? "").join("");
const finish = chunks.filter((c) => c.choices[0]?.finish_reason).map((c) => c.choices[0].finish_reason);
const again = await req("POST", C, J({ ...streamBody, stream: false }));
const good = events.at(-1) === "data: [DONE]" && finish.length === 1 && finish[0] === "length" && text === again.json.choices[0].text;
console.log(`${good ? "ok  " : "FAIL"} concurrent stream completed unharmed (${chunks.length} chunks, text equals a clean re-run)`);
if (!good) fails++;
console.log(`${n} malformed requests sent; ${fails ? fails + " check(s) failed" : "all answered correctly"}`);
process.exit(fails ? 1 : 0);
