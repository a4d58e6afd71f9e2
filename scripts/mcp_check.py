"""Drives Gavel's MCP server with the official MCP Python SDK (`mcp` 2.x), unchanged, and prints
what it saw as one JSON object on stdout. Run by `server/tests/api/mcp.rs`.

Environment:
  GAVEL_MCP_URL       the server's /mcp URL (Streamable HTTP), or
  GAVEL_MCP_STDIO     a JSON list: the command that serves MCP on stdio (`gavel mcp --stdio ...`),
                      started with GAVEL_API_KEY in its environment
  GAVEL_MCP_MODE      the SDK's connect mode: `legacy` (initialize handshake) or `auto`
                      (`server/discover` first, as 2026-07-28 clients do)
  GAVEL_API_KEY       the caller's key
  GAVEL_REVOKED_KEY   optional: a revoked key, which must be refused
  GAVEL_JOB           a JSON object: the arguments of the JSON-agent auction to run
  GAVEL_ROUTES        a JSON list of `gavel_route` arguments to call, in order
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def transport(key):
    url = os.environ.get("GAVEL_MCP_URL")
    if url is None:
        command = json.loads(os.environ["GAVEL_MCP_STDIO"])
        env = {"GAVEL_API_KEY": key}
        return StdioServerParameters(command=command[0], args=command[1:], env=env), None
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30.0, read=60.0)
    )
    return streamable_http_client(url, http_client=http), http


def result(called):
    """A tool result as plain data."""
    return {
        "is_error": called.is_error,
        "structured": called.structured_content,
        "text": [block.text for block in called.content if getattr(block, "type", "") == "text"],
    }


async def session(key, mode, job):
    seen = {}
    target, http = transport(key)
    try:
        async with Client(target, mode=mode) as client:
            seen["protocol_version"] = client.protocol_version
            seen["server_name"] = client.server_info.name if client.server_info else None
            listed = await client.list_tools()
            seen["tools"] = {
                tool.name: {
                    "has_input_schema": bool(tool.input_schema),
                    "has_output_schema": bool(tool.output_schema),
                    "read_only": tool.annotations.read_only_hint if tool.annotations else None,
                }
                for tool in listed.tools
            }
            seen["balance_before"] = result(await client.call_tool("gavel_balance", {}))
            seen["discover"] = result(
                await client.call_tool("gavel_discover", {"category": "chat", "sort": "price"})
            )
            seen["recommend"] = result(
                await client.call_tool("gavel_recommend", {"prompt": "2+2?", "top_k": 3})
            )
            seen["auction"] = result(
                await client.call_tool("gavel_auction", {"prompt": "2+2?", "max_price": "2"})
            )
            seen["json_auction"] = result(await client.call_tool("gavel_auction", job))
            seen["priced_out"] = result(
                await client.call_tool("gavel_auction", {"prompt": "2+2?", "max_price": "0.01"})
            )
            seen["bad_argument"] = result(
                await client.call_tool("gavel_auction", {"prompt": "hi", "objective": "fastest"})
            )
            seen["routes"] = [
                result(await client.call_tool("gavel_route", route))
                for route in json.loads(os.environ["GAVEL_ROUTES"])
            ]
            seen["unknown_argument"] = result(
                await client.call_tool("gavel_recommend", {"prompt": "hi", "temprature": 1})
            )
            job_id = (seen["auction"]["structured"] or {}).get("job_id")
            seen["job"] = result(await client.call_tool("gavel_job", {"id": job_id or "none"}))
            seen["balance_after"] = result(await client.call_tool("gavel_balance", {}))
    finally:
        if http is not None:
            await http.aclose()
    return seen


async def refused(key, mode):
    """What the SDK does with a key the server refuses."""
    target, http = transport(key)
    try:
        async with Client(target, mode=mode) as client:
            await client.list_tools()
        return {"refused": False}
    except BaseException as err:  # the SDK raises an exception group from its task group
        return {"refused": True, "error": repr(err)[:500]}
    finally:
        await http.aclose()


async def main():
    key = os.environ.get("GAVEL_API_KEY", "")
    mode = os.environ.get("GAVEL_MCP_MODE", "auto")
    job = json.loads(os.environ["GAVEL_JOB"])
    seen = await session(key, mode, job)
    revoked = os.environ.get("GAVEL_REVOKED_KEY")
    if revoked:
        seen["revoked"] = await refused(revoked, mode)
    json.dump(seen, sys.stdout)


asyncio.run(main())
