// The official TypeScript SDK against the gateway's Anthropic-compatible endpoint.
//
// Run by tests/gateway/test_typescript_sdk.py with GATEWAY_URL, GATEWAY_KEY and MODEL set.
// Prints ONE JSON object on stdout with what the SDK saw; the Python test compares it with
// what the gateway stored. Exits non-zero on any unexpected error (the message on stderr).
import Anthropic from "@anthropic-ai/sdk";

function env(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
}

const baseURL = env("GATEWAY_URL");
const apiKey = env("GATEWAY_KEY");
const model = env("MODEL");
const messages = [{ role: "user", content: "Say hello to the gateway." }];

const textOf = (message) =>
  message.content
    .filter((block) => block.type === "text")
    .map((block) => block.text)
    .join("");

async function main() {
  const client = new Anthropic({ baseURL, apiKey, maxRetries: 0 });
  const seen = {};

  // 1. A plain call, with the raw response for its headers.
  const { data: plain, response } = await client.messages
    .create({ model, max_tokens: 64, messages })
    .withResponse();
  seen.plain = {
    id: plain.id,
    type: plain.type,
    role: plain.role,
    model: plain.model,
    stop_reason: plain.stop_reason,
    text: textOf(plain),
    content: plain.content,
    usage: plain.usage,
    request_id: response.headers.get("request-id"),
    gateway_request_id: response.headers.get("x-gateway-request-id"),
  };

  // 2. A stream: the text deltas as they come, then the message the SDK put together.
  const stream = client.messages.stream({ model, max_tokens: 64, messages });
  const deltas = [];
  const events = [];
  stream.on("text", (delta) => deltas.push(delta));
  stream.on("streamEvent", (event) => events.push(event.type));
  const final = await stream.finalMessage();
  seen.stream = {
    deltas,
    text: deltas.join(""),
    events,
    gateway_request_id: stream.response?.headers.get("x-gateway-request-id") ?? null,
    final: {
      id: final.id,
      type: final.type,
      role: final.role,
      model: final.model,
      stop_reason: final.stop_reason,
      text: textOf(final),
      content: final.content,
      usage: final.usage,
    },
  };

  // 3. Token counting, and the models, every page of them (small pages, so that the SDK
  // follows the after_id cursor through the gateway).
  const counted = await client.messages.countTokens({ model, messages });
  seen.count = counted.input_tokens;
  const models = [];
  let pages = 0;
  const first = await client.models.list({ limit: 5 });
  for await (const page of first.iterPages()) {
    pages += 1;
    models.push(...page.data.map((info) => info.id));
  }
  seen.models = models;
  seen.model_pages = pages;
  const retrieved = await client.models.retrieve(model);
  seen.retrieved = { id: retrieved.id, type: retrieved.type };

  // 4. A made-up key: the SDK must raise its AuthenticationError.
  const bogus = new Anthropic({ baseURL, apiKey: "gwt_not-a-real-key", maxRetries: 0 });
  try {
    await bogus.messages.create({ model, max_tokens: 8, messages });
    throw new Error("a made-up key was not refused");
  } catch (error) {
    if (!(error instanceof Anthropic.AuthenticationError)) {
      throw error;
    }
    seen.bogus = {
      status: error.status,
      type: error.error?.error?.type ?? null,
      message: error.error?.error?.message ?? null,
    };
  }

  process.stdout.write(`${JSON.stringify(seen)}\n`);
}

main().catch((error) => {
  const status = error?.status === undefined ? "" : ` (status ${error.status})`;
  process.stderr.write(`client.mjs failed${status}: ${error?.stack ?? error}\n`);
  if (error?.error !== undefined) {
    process.stderr.write(`body: ${JSON.stringify(error.error)}\n`);
  }
  process.exit(1);
});
