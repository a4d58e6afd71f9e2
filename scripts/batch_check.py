#!/usr/bin/env python3
"""Drives a running Gavel's Batch API with the official OpenAI Python SDK, unchanged.

Usage: GAVEL_BASE_URL=http://127.0.0.1:PORT/v1 GAVEL_API_KEY=gvl_... GAVEL_LINES=30 \
       scripts/batch_check.py

The flow is the one OpenAI's batch guide shows: upload a JSONL file with purpose "batch",
create a batch on /v1/chat/completions, poll it until it ends, then read the output file.
Prints one JSON object describing what the SDK saw; server/tests/api/sdk.rs checks it.
"""
import io
import json
import os
import time

import openai
from openai import OpenAI

client = OpenAI(base_url=os.environ["GAVEL_BASE_URL"], api_key=os.environ["GAVEL_API_KEY"], max_retries=0)
count = int(os.environ.get("GAVEL_LINES", "30"))
seen = {"sdk_version": openai.__version__}

lines = [
    {
        "custom_id": f"request-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "auction",
            "messages": [{"role": "user", "content": f"Say hello {i}"}],
            "auction": {"max_price": "2"},
        },
    }
    for i in range(count)
]
payload = "\n".join(json.dumps(line) for line in lines).encode()
uploaded = client.files.create(file=("requests.jsonl", io.BytesIO(payload)), purpose="batch")
seen["file"] = {"object": uploaded.object, "purpose": uploaded.purpose, "bytes": uploaded.bytes, "filename": uploaded.filename}
seen["file_retrieved"] = client.files.retrieve(uploaded.id).id == uploaded.id
seen["file_content_equal"] = client.files.content(uploaded.id).read() == payload

# A file with a bad line is refused at upload, naming the line and the field.
bad = payload + b'\n{"custom_id": "request-0", "method": "POST", "url": "/v1/chat/completions", "body": {}}'
try:
    client.files.create(file=("bad.jsonl", io.BytesIO(bad)), purpose="batch")
    seen["bad_file"] = None
except openai.APIStatusError as err:
    seen["bad_file"] = {"status": err.status_code, "message": err.message}

batch = client.batches.create(
    input_file_id=uploaded.id,
    endpoint="/v1/chat/completions",
    completion_window="24h",
    metadata={"run": "sdk"},
)
seen["created_status"] = batch.status
deadline = time.time() + 120
polls = 0
while batch.status not in ("completed", "failed", "expired", "cancelled") and time.time() < deadline:
    time.sleep(0.2)
    batch = client.batches.retrieve(batch.id)
    polls += 1
seen["status"] = batch.status
seen["polls"] = polls
seen["counts"] = {"total": batch.request_counts.total, "completed": batch.request_counts.completed, "failed": batch.request_counts.failed}
seen["metadata"] = batch.metadata
seen["error_file_id"] = batch.error_file_id
output = client.files.content(batch.output_file_id).text if batch.output_file_id else ""
results = [json.loads(line) for line in output.splitlines() if line.strip()]
seen["output"] = [
    {
        "custom_id": r["custom_id"],
        "status_code": r["response"]["status_code"],
        "request_id": r["response"]["request_id"],
        "content": r["response"]["body"]["choices"][0]["message"]["content"],
        "cost": r["response"]["body"]["usage"]["cost"],
    }
    for r in results
]
# Reading and cancelling an ended batch changes nothing.
seen["cancel_after_end"] = client.batches.cancel(batch.id).status
seen["listed"] = [b.id for b in client.batches.list(limit=10).data]
seen["batch_id"] = batch.id
print(json.dumps(seen))
