// Drives a running Gavel with the official OpenAI Node SDK, unchanged.
//
// Usage: NODE_PATH=target/node/node_modules GAVEL_BASE_URL=http://127.0.0.1:PORT/v1 \
//        GAVEL_API_KEY=gvl_... GAVEL_MODELS='{"minimal": slug, "tools": slug}' node scripts/sdk_check.cjs
//
// Prints one JSON object describing what the SDK saw; server/tests/api/sdk.rs runs it (scripts/test
// installs the SDK under target/node) and checks the result.
const OpenAI = require("openai");

async function main() {
  const client = new OpenAI({ baseURL: process.env.GAVEL_BASE_URL, apiKey: process.env.GAVEL_API_KEY, maxRetries: 0 });
  const agents = JSON.parse(process.env.GAVEL_MODELS || "{}");
  const hello = [{ role: "user", content: "Say hello" }];
  const seen = { sdk_version: OpenAI.VERSION };

  seen.retrieved = [(await client.models.retrieve("auction")).id, (await client.models.retrieve(agents.minimal)).id];

  // The stream helper's final completion: it throws "missing finish_reason" on streams without one.
  const final = await client.chat.completions.stream({ model: agents.minimal, messages: hello }).finalChatCompletion();
  seen.final = { content: final.choices[0].message.content, finish_reason: final.choices[0].finish_reason, model: final.model };

  // The documented loop over a raw stream: every chunk has a choice.
  let text = "";
  for await (const chunk of await client.chat.completions.create({ model: agents.minimal, messages: hello, stream: true })) {
    text += chunk.choices[0].delta.content || "";
  }
  seen.loop_text = text;

  const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }];
  const withTools = await client.chat.completions.stream({ model: agents.tools, messages: hello, tools }).finalChatCompletion();
  const call = withTools.choices[0].message.tool_calls[0];
  seen.tool_call = { finish_reason: withTools.choices[0].finish_reason, name: call.function.name, arguments: call.function.arguments };

  console.log(JSON.stringify(seen));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
