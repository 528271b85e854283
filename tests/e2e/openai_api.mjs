// openai_api.mjs — the OpenAI extras with the official `openai` client:
// logprobs (greedy token = top logprob, values <= 0), n: 2, logit_bias, tool
// calls with tool_choice "required" / a named function (arguments parse and
// satisfy the schema), response_format json_schema (enum + bounded integer),
// each streamed and not; refused fields name themselves.
// Usage: EMOE_BASE=http://127.0.0.1:PORT EMOE_KEY=... node openai_api.mjs
import OpenAI from "openai";

const base = process.env.EMOE_BASE;
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: process.env.EMOE_KEY ?? "none", maxRetries: 0, timeout: 120000 });
let fails = 0;
const ok = (cond, what) => {
  console.log(`${cond ? "ok  " : "FAIL"} ${what}`);
  if (!cond) fails++;
};
const model = (await client.models.list()).data[0].id;
const msgs = [{ role: "user", content: "What is the weather in Oslo?" }];

async function collect(stream) {
  const ch = {};
  let usage = null, chunks = 0;
  for await (const c of stream) {
    chunks++;
    if (c.usage) usage = c.usage;
    for (const x of c.choices) {
      const s = (ch[x.index] ??= { text: "", lp: [], ids: [], calls: [], finish: [] });
      s.text += x.delta?.content ?? x.text ?? "";
      if (x.logprobs?.content) s.lp.push(...x.logprobs.content);
      if (x.logprobs?.tokens) s.lp.push(...x.logprobs.tokens);
      if (x.token_ids) s.ids.push(...x.token_ids);
      for (const tc of x.delta?.tool_calls ?? []) {
        const t = (s.calls[tc.index] ??= { name: "", arguments: "" });
        if (tc.function?.name) t.name += tc.function.name;
        if (tc.function?.arguments) t.arguments += tc.function.arguments;
      }
      if (x.finish_reason) s.finish.push(x.finish_reason);
    }
  }
  return { ch, usage, chunks };
}

// ---- logprobs ----
const lpReq = { model, messages: msgs, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 5, ignore_eos: true };
const l1 = await client.chat.completions.create(lpReq);
const content = l1.choices[0].logprobs?.content ?? [];
ok(content.length === 6, `chat logprobs: one entry per token (${content.length})`);
ok(content.every((e) => e.logprob <= 0 && e.top_logprobs.length === 5 && e.top_logprobs.every((t) => t.logprob <= 0)), "chat logprobs are <= 0");
ok(content.every((e) => e.top_logprobs[0].token === e.token && e.top_logprobs[0].logprob === e.logprob), "greedy token is the top logprob");
ok(content.every((e) => e.top_logprobs.every((t, i, a) => i === 0 || a[i - 1].logprob >= t.logprob)), "top_logprobs sorted");
ok(content.map((e) => e.token).join("") === l1.choices[0].message.content, "logprob tokens concatenate to the content");
const l2 = await collect(await client.chat.completions.create({ ...lpReq, stream: true }));
ok(JSON.stringify(l2.ch[0].lp.map((e) => [e.token, e.logprob])) === JSON.stringify(content.map((e) => [e.token, e.logprob])), "streamed chat logprobs == non-streamed");
ok(l2.chunks <= 6 + 2, `streamed logprobs: no empty chunks (${l2.chunks} chunks for 6 tokens)`);
const cl = await client.completions.create({ model, prompt: "The capital of France is", max_tokens: 5, temperature: 0, logprobs: 3, ignore_eos: true });
const clp = cl.choices[0].logprobs;
ok(clp.tokens.length === 5 && clp.token_logprobs.every((x) => x <= 0) && clp.text_offset.length === 5, "completions logprobs arrays");
ok(clp.top_logprobs.every((m, i) => Object.keys(m).length <= 3 && Math.max(...Object.values(m)) === clp.token_logprobs[i]), "completions: greedy token is the top logprob");

const ep = { model, prompt: "The capital of France is", max_tokens: 2, temperature: 0, logprobs: 2, echo: true, ignore_eos: true };
const ec = await client.completions.create(ep);
const elp = ec.choices[0].logprobs;
ok(ec.choices[0].text.startsWith("The capital of France is") && elp.tokens.length === ec.usage.prompt_tokens + 2 && elp.token_logprobs[0] === null &&
   elp.token_logprobs.slice(1).every((x) => x <= 0) && elp.tokens.join("") === ec.choices[0].text, "echo: prompt tokens and their logprobs come first");
const es = await collect(await client.completions.create({ ...ep, stream: true }));
ok(es.ch[0].text === ec.choices[0].text && es.ch[0].lp.length === elp.tokens.length, "echo streamed == non-streamed");

// ---- n ----
const n2 = await client.chat.completions.create({ model, messages: msgs, max_tokens: 5, temperature: 0, n: 2, ignore_eos: true });
ok(n2.choices.length === 2 && n2.choices[0].index === 0 && n2.choices[1].index === 1, "n: 2 returns two choices");
ok(n2.choices[0].message.content === n2.choices[1].message.content && n2.usage.completion_tokens === 10, "greedy choices agree; usage sums the choices");
const n2s = await collect(await client.completions.create({ model, prompt: "Hello", max_tokens: 4, n: 2, temperature: 1, seed: 3, stream: true, stream_options: { include_usage: true }, ignore_eos: true }));
ok(Object.keys(n2s.ch).length === 2 && n2s.ch[0].finish.length === 1 && n2s.ch[1].finish.length === 1 && n2s.usage.completion_tokens === 8, "streamed n: 2: two choices, one finish each, usage");

// ---- logit_bias ----
const lb = await client.completions.create({ model, prompt: "Hello", max_tokens: 6, logit_bias: { 1000: 100 }, return_token_ids: true, ignore_eos: true, temperature: 1, seed: 1 });
ok(lb.choices[0].token_ids.length === 6 && lb.choices[0].token_ids.every((t) => t === 1000), `logit_bias +100: every token is 1000 (${lb.choices[0].token_ids})`);
const lbs = await collect(await client.chat.completions.create({ model, messages: msgs, max_tokens: 6, logit_bias: { 1000: 100 }, return_token_ids: true, ignore_eos: true, stream: true }));
ok(lbs.ch[0].ids.length === 6 && lbs.ch[0].ids.every((t) => t === 1000), "logit_bias streamed");

// ---- tools ----
const weather = {
  type: "object",
  properties: { city: { type: "string", maxLength: 8 }, days: { type: "integer", minimum: 1, maximum: 7 }, unit: { enum: ["c", "f"] } },
  required: ["city", "days", "unit"],
  additionalProperties: false,
};
const tools = [
  { type: "function", function: { name: "get_weather", description: "Weather forecast", parameters: weather } },
  { type: "function", function: { name: "get_time", parameters: { type: "object", properties: { tz: { enum: ["utc", "cet"] } }, required: ["tz"], additionalProperties: false } } },
];
const checkWeather = (a) =>
  a && typeof a.city === "string" && [...a.city].length <= 8 && Number.isInteger(a.days) && a.days >= 1 && a.days <= 7 && ["c", "f"].includes(a.unit) && Object.keys(a).length === 3;
const checkCall = (c) => {
  try {
    const a = JSON.parse(c.arguments);
    return c.name === "get_weather" ? checkWeather(a) : c.name === "get_time" && ["utc", "cet"].includes(a.tz) && Object.keys(a).length === 1;
  } catch { return false; }
};
for (const seed of [1, 2, 3]) {
  const t = await client.chat.completions.create({ model, messages: msgs, tools, tool_choice: "required", max_tokens: 200, temperature: 1, seed });
  const m = t.choices[0].message;
  ok(t.choices[0].finish_reason === "tool_calls" && m.tool_calls?.length === 1 && checkCall(m.tool_calls[0].function) && m.tool_calls[0].id && m.tool_calls[0].type === "function",
    `tool_choice required (seed ${seed}): ${JSON.stringify(m.tool_calls?.[0]?.function)}`);
}
const named = await client.chat.completions.create({ model, messages: msgs, tools, tool_choice: { type: "function", function: { name: "get_weather" } }, max_tokens: 200, temperature: 1, seed: 4 });
ok(named.choices[0].message.tool_calls?.[0]?.function.name === "get_weather" && checkCall(named.choices[0].message.tool_calls[0].function), "named tool_choice calls that function");
const ts = await collect(await client.chat.completions.create({ model, messages: msgs, tools, tool_choice: "required", max_tokens: 200, temperature: 1, seed: 5, stream: true }));
ok(ts.ch[0].finish[0] === "tool_calls" && ts.ch[0].calls.length === 1 && checkCall(ts.ch[0].calls[0]), `streamed tool call deltas: ${JSON.stringify(ts.ch[0].calls)}`);
// auto: the model answers in text here; streamed content == non-streamed content
const au = { model, messages: msgs, tools, max_tokens: 24, temperature: 0, ignore_eos: true };
const a1 = await client.chat.completions.create(au);
const a2 = await collect(await client.chat.completions.create({ ...au, stream: true }));
ok(a2.ch[0].text === (a1.choices[0].message.content ?? "") && a2.ch[0].finish[0] === a1.choices[0].finish_reason && a2.chunks > 3,
   `tool_choice auto streamed == non-streamed (${a2.chunks} chunks)`);
// History with an assistant tool call and a tool result is accepted.
const hist = [...msgs, { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: "{\"city\":\"Oslo\",\"days\":1,\"unit\":\"c\"}" } }] },
  { role: "tool", tool_call_id: "call_1", content: "{\"temp\":3}" }];
const h = await client.chat.completions.create({ model, messages: hist, tools, max_tokens: 4, temperature: 0 });
ok(h.choices.length === 1, "tool history accepted");

// ---- structured output ----
const schema = {
  type: "object",
  properties: { color: { type: "string", enum: ["red", "green", "blue"] }, count: { type: "integer", minimum: 2, maximum: 9 } },
  required: ["color", "count"],
  additionalProperties: false,
};
const valid = (s) => {
  try {
    const v = JSON.parse(s);
    return ["red", "green", "blue"].includes(v.color) && Number.isInteger(v.count) && v.count >= 2 && v.count <= 9 && Object.keys(v).length === 2;
  } catch { return false; }
};
const rf = { type: "json_schema", json_schema: { name: "pick", schema, strict: true } };
for (const seed of [1, 2, 3]) {
  const r = await client.chat.completions.create({ model, messages: msgs, response_format: rf, max_tokens: 100, temperature: 1, seed });
  ok(valid(r.choices[0].message.content) && r.choices[0].finish_reason === "stop", `json_schema (seed ${seed}): ${r.choices[0].message.content}`);
}
const rs = await collect(await client.chat.completions.create({ model, messages: msgs, response_format: rf, max_tokens: 100, temperature: 1, seed: 7, n: 2, stream: true }));
ok(valid(rs.ch[0].text) && valid(rs.ch[1].text), `json_schema streamed, n: 2: ${rs.ch[0].text} ${rs.ch[1].text}`);

// pydantic-style: $defs + $ref, a nullable field (type list), anyOf
const pyd = {
  $defs: { Item: { type: "object", properties: { id: { type: "integer", minimum: 0, maximum: 99 }, ok: { type: "boolean" } }, required: ["id", "ok"], additionalProperties: false } },
  type: "object",
  properties: { item: { $ref: "#/$defs/Item" }, note: { type: ["string", "null"], maxLength: 6 }, alt: { anyOf: [{ $ref: "#/$defs/Item" }, { type: "null" }] } },
  required: ["item", "note", "alt"],
  additionalProperties: false,
};
const validItem = (x) => x && Number.isInteger(x.id) && x.id >= 0 && x.id <= 99 && typeof x.ok === "boolean" && Object.keys(x).length === 2;
for (const seed of [1, 2]) {
  const r = await client.chat.completions.create({ model, messages: msgs, response_format: { type: "json_schema", json_schema: { name: "p", schema: pyd, strict: true } }, max_tokens: 120, temperature: 1, seed });
  let v = null;
  try { v = JSON.parse(r.choices[0].message.content); } catch {}
  ok(v && validItem(v.item) && (v.note === null || (typeof v.note === "string" && [...v.note].length <= 6)) && (v.alt === null || validItem(v.alt)),
    `$defs/$ref + nullable + anyOf (seed ${seed}): ${r.choices[0].message.content}`);
}

// ---- refusals name the field ----
const bad = async (body, param, what) => {
  try { await client.chat.completions.create({ model, messages: msgs, max_tokens: 2, ...body }); ok(false, what); }
  catch (e) { ok(e instanceof OpenAI.BadRequestError && e.param === param, `${what} -> 400 param ${e.param}: ${e.message}`); }
};
await bad({ frobnicate: 1 }, "frobnicate", "unknown field");
await bad({ audio: { voice: "x" } }, "audio", "audio");
await bad({ logit_bias: { 99999999: 5 } }, "logit_bias", "logit_bias id outside the vocabulary");
await bad({ response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "string", pattern: "a+" } } } }, "response_format", "unsupported schema keyword");

console.log(fails ? `${fails} check(s) failed` : "all checks passed");
process.exit(fails ? 1 : 0);
