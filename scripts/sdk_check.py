#!/usr/bin/env python3
"""Drives a running Gavel with the official OpenAI Python SDK, unchanged.

Usage: GAVEL_BASE_URL=http://127.0.0.1:PORT/v1 GAVEL_API_KEY=gvl_... scripts/sdk_check.py

Prints one JSON object describing what the SDK saw; the server's integration test
(server/tests/api/sdk.rs) runs it and checks the result.
"""
import json
import os

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["GAVEL_BASE_URL"], api_key=os.environ["GAVEL_API_KEY"], max_retries=0)
seen = {"sdk_version": openai.__version__}

models = client.models.list()
seen["models"] = [m.id for m in models.data]

raw = client.chat.completions.with_raw_response.create(
    model="auction",
    messages=[{"role": "user", "content": "Say hello"}],
    extra_body={"auction": {"max_price": "2", "objective": "cost"}},
)
completion = raw.parse()
seen["auction_header"] = raw.headers.get("x-gavel-auction-id")
seen["model"] = completion.model
seen["content"] = completion.choices[0].message.content
seen["prompt_tokens"] = completion.usage.prompt_tokens
seen["cost"] = (completion.usage.model_extra or {}).get("cost")
seen["auction"] = (completion.model_extra or {}).get("auction")

try:
    client.chat.completions.create(
        model="auction/ocr", messages=[{"role": "user", "content": "x"}]
    )
    seen["error"] = None
except openai.APIStatusError as err:
    seen["error"] = {"status": err.status_code, "class": type(err).__name__, "code": err.code}

try:
    OpenAI(base_url=os.environ["GAVEL_BASE_URL"], api_key="gvl_wrong", max_retries=0).models.list()
    seen["auth_error"] = None
except openai.AuthenticationError as err:
    seen["auth_error"] = err.status_code

# Streaming through the SDK: a named agent, chunks as they come, a final usage chunk.
stream_model = os.environ.get("GAVEL_STREAM_MODEL")
if stream_model:
    pieces, usage = [], None
    for chunk in client.chat.completions.create(
        model=stream_model,
        messages=[{"role": "user", "content": "Stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = {"completion_tokens": chunk.usage.completion_tokens, "cost": (chunk.usage.model_extra or {}).get("cost")}
    seen["stream"] = {"text": "".join(pieces), "usage": usage}

print(json.dumps(seen))
