#!/usr/bin/env python3
"""Drives a running Gavel with the official OpenAI Python SDK, unchanged.

Usage: GAVEL_BASE_URL=http://127.0.0.1:PORT/v1 GAVEL_API_KEY=gvl_... \
       GAVEL_MODELS='{"streamer": slug, "minimal": slug, "tools": slug, "cut": slug}' \
       scripts/sdk_check.py

Prints one JSON object describing what the SDK saw; the server's integration test
(server/tests/api/sdk.rs) starts the agents, runs this script and checks the result. The loops
below are the ones OpenAI's own documentation shows, written as a caller would write them.
"""
import json
import os

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["GAVEL_BASE_URL"], api_key=os.environ["GAVEL_API_KEY"], max_retries=0)
agents = json.loads(os.environ.get("GAVEL_MODELS", "{}"))
seen = {"sdk_version": openai.__version__}
hello = [{"role": "user", "content": "Say hello"}]


def status_error(call):
    """Runs `call`, returning what the SDK raised, or None."""
    try:
        call()
        return None
    except openai.APIStatusError as err:
        return {"status": err.status_code, "class": type(err).__name__, "code": err.code, "message": err.message}


# Models: the list, and one model at a time (slugs contain a slash).
seen["models"] = [m.id for m in client.models.list().data]
seen["retrieved"] = [client.models.retrieve(m).id for m in seen["models"]]
seen["retrieve_missing"] = status_error(lambda: client.models.retrieve("nobody/nothing"))

# A plain completion by auction, with Gavel's extension and a response_format passed through.
raw = client.chat.completions.with_raw_response.create(
    model="auction",
    messages=hello,
    response_format={"type": "json_object"},
    extra_body={"auction": {"max_price": "2", "objective": "cost"}},
)
completion = raw.parse()
seen["auction_header"] = raw.headers.get("x-gavel-auction-id")
seen["model"] = completion.model
seen["object"] = completion.object
seen["created"] = completion.created
seen["content"] = completion.choices[0].message.content
seen["finish_reason"] = completion.choices[0].finish_reason
seen["prompt_tokens"] = completion.usage.prompt_tokens
seen["cost"] = completion.usage.cost
seen["cost_is_number"] = isinstance(completion.usage.cost, (int, float))
seen["auction"] = (completion.model_extra or {}).get("auction")

# A chat to a category whose agents are JSON agents: refused, nothing charged.
seen["error"] = status_error(lambda: client.chat.completions.create(model="auction/ocr", messages=hello))
seen["auth_error"] = status_error(lambda: OpenAI(base_url=os.environ["GAVEL_BASE_URL"], api_key="gvl_wrong", max_retries=0).models.list())

if "minimal" in agents:
    # The textbook loop from OpenAI's docs, no `stream_options`: every chunk has a choice.
    text, chunks, finish, created = "", 0, None, set()
    for chunk in client.chat.completions.create(model=agents["minimal"], messages=hello, stream=True):
        chunks += 1
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason
        created.add(chunk.created)
    seen["textbook"] = {"text": text, "chunks": chunks, "finish_reason": finish, "created": sorted(created)}

    # The stream helper's final completion.
    with client.chat.completions.stream(model=agents["minimal"], messages=hello) as stream:
        for _event in stream:
            pass
        final = stream.get_final_completion()
    seen["helper"] = {"content": final.choices[0].message.content, "finish_reason": final.choices[0].finish_reason}

if "streamer" in agents:
    # With `include_usage`, the usage chunk (no choices) comes last, its cost a number.
    pieces, usage, empty = [], None, 0
    for chunk in client.chat.completions.create(
        model=agents["streamer"], messages=hello, stream=True, stream_options={"include_usage": True}
    ):
        if not chunk.choices:
            empty += 1
        elif chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = {"completion_tokens": chunk.usage.completion_tokens, "cost": chunk.usage.cost}
    seen["stream"] = {"text": "".join(pieces), "usage": usage, "chunks_without_choices": empty}

if "tools" in agents:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    with client.chat.completions.stream(model=agents["tools"], messages=hello, tools=tools) as stream:
        for _event in stream:
            pass
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    seen["tool_call"] = {"finish_reason": final.choices[0].finish_reason, "id": call.id, "name": call.function.name, "arguments": call.function.arguments}

if "cut" in agents:
    # A stream the agent breaks off: the SDK raises, after the text that did arrive.
    text = ""
    try:
        for chunk in client.chat.completions.create(model=agents["cut"], messages=hello, stream=True):
            text += chunk.choices[0].delta.content or ""
        seen["cut"] = {"raised": None, "text": text}
    except openai.APIError as err:
        seen["cut"] = {"raised": type(err).__name__, "message": err.message, "text": text}

print(json.dumps(seen))
