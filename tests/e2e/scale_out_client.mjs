// scale_out_client.mjs — the openai client behind nginx (tests/e2e/scale_out.sh):
// `defaultHeaders: {"X-Emoe-Task": ...}` keeps a client's requests on one
// replica, a request's own `headers` override it, and X-Emoe-Replica is
// readable through `.withResponse()` (the snippets in docs/deployment.md).
// Prints "TASK REPLICA" lines and ok/FAIL lines; exit 1 on a failure.
// Usage: EMOE_BASE=http://127.0.0.1:PORT node scale_out_client.mjs TASK...
import OpenAI from "openai";

const base = process.env.EMOE_BASE;
const tasks = process.argv.slice(2);
let fails = 0;
const ok = (cond, what) => {
  console.log(`${cond ? "ok  " : "FAIL"} ${what}`);
  if (!cond) fails++;
};
const params = { model: "any", prompt: [5, 17, 29], max_tokens: 2, temperature: 0, ignore_eos: true };
const seen = {};
for (const task of tasks) {
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "unused", maxRetries: 0, timeout: 30000,
                              defaultHeaders: { "X-Emoe-Task": task } });
  const models = await client.models.list();
  params.model = models.data[0].id;
  const reps = new Set();
  for (let i = 0; i < 3; i++) {
    const { data, response } = await client.completions.create(params).withResponse();
    reps.add(response.headers.get("x-emoe-replica"));
    if (data.choices.length !== 1) fails++;
  }
  ok(reps.size === 1 && Boolean([...reps][0]), `defaultHeaders task ${task}: 3 requests on one replica (${[...reps]})`);
  seen[task] = [...reps][0];
  console.log(`${task} ${seen[task]}`);
}
// A per-request header overrides the client's default.
if (tasks.length >= 2) {
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "unused", maxRetries: 0, timeout: 30000,
                              defaultHeaders: { "X-Emoe-Task": tasks[0] } });
  const { response } = await client.completions.create(params, { headers: { "X-Emoe-Task": tasks[1] } }).withResponse();
  ok(response.headers.get("x-emoe-replica") === seen[tasks[1]], `per-request header lands with task ${tasks[1]}`);
}
process.exit(fails ? 1 : 0);
