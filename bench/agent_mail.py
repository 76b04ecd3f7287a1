"""One message round trip and N concurrent senders over MCP (Streamable HTTP), the same
client for both sides (run by bench/compare.sh): MCP Agent Mail (send_message, then
fetch_inbox until the message is there) and cco's daemon /mcp (publish, then wait from the
seq before it). Prints one `key=value` line per side; medians in ms, rates in messages/s.
Usage: agent_mail.py agentmail URL [TOKEN] | agent_mail.py cco URL TOKEN ISSUE
  (ROUND_TRIPS=50, SENDERS=16, SEND_SECONDS=5 in the environment)"""

import asyncio
import json
import os
import statistics
import sys
import time

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

ROUND_TRIPS = int(os.environ.get("ROUND_TRIPS", "50"))
SENDERS = int(os.environ.get("SENDERS", "16"))
SEND_SECONDS = float(os.environ.get("SEND_SECONDS", "5"))
# A round trip that has not found its message by then is reported as failed.
FIND_TIMEOUT_S = 10.0


def payload(result):
    """The tool's JSON answer (structured content, else the first text block)."""
    if result.isError:
        raise RuntimeError(f"tool error: {result.content}")
    if getattr(result, "structuredContent", None):
        sc = result.structuredContent
        return sc.get("result", sc) if isinstance(sc, dict) and len(sc) == 1 else sc
    for c in result.content:
        if getattr(c, "text", None):
            try:
                return json.loads(c.text)
            except ValueError:
                return c.text
    return None


class Session:
    def __init__(self, url, headers):
        self.url, self.headers = url, headers

    async def __aenter__(self):
        self._http = streamablehttp_client(self.url, headers=self.headers)
        read, write, _ = await self._http.__aenter__()
        self._s = ClientSession(read, write)
        await self._s.__aenter__()
        await self._s.initialize()
        return self

    async def __aexit__(self, *exc):
        await self._s.__aexit__(*exc)
        await self._http.__aexit__(*exc)

    async def call(self, tool, args):
        return payload(await self._s.call_tool(tool, args))


class AgentMail:
    """Agent Mail: a project, one receiver and one sender per concurrent sender."""

    def __init__(self, url, token):
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.project = os.path.abspath(os.environ.get("AGENT_MAIL_PROJECT", "."))

    async def setup(self, s, senders):
        await s.call("ensure_project", {"human_key": self.project})
        names = []
        for _ in range(senders + 1):
            a = await s.call("register_agent", {"project_key": self.project, "program": "bench",
                                                "model": "none", "task_description": "bench"})
            names.append(a["name"])
        self.receiver, self.senders = names[0], names[1:]

    async def send(self, s, sender, n):
        await s.call("send_message", {"project_key": self.project, "sender_name": sender,
                                      "to": [self.receiver], "subject": f"m{n}", "body_md": f"m{n}"})

    async def round_trip(self, s, n):
        subject = f"rt-{n}-{time.monotonic_ns()}"
        start = time.perf_counter()
        await s.call("send_message", {"project_key": self.project, "sender_name": self.senders[0],
                                      "to": [self.receiver], "subject": subject, "body_md": "x"})
        while time.perf_counter() - start < FIND_TIMEOUT_S:
            inbox = await s.call("fetch_inbox", {"project_key": self.project,
                                                 "agent_name": self.receiver, "limit": 5})
            msgs = inbox if isinstance(inbox, list) else inbox.get("messages", inbox.get("result", []))
            if any(m.get("subject") == subject for m in msgs):
                return time.perf_counter() - start
        raise RuntimeError(f"{subject} not in the inbox after {FIND_TIMEOUT_S}s")


class Cco:
    """cco's daemon /mcp: publish, then wait from the seq before it."""

    def __init__(self, url, token, issue):
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}", "X-Cco-Issue": issue}

    async def setup(self, s, senders):
        self.senders = [f"sender-{i}" for i in range(senders)]

    async def send(self, s, sender, n):
        await s.call("publish", {"event_type": "bench_msg", "topic": "bench", "data": {"n": n}})

    async def round_trip(self, s, n):
        start = time.perf_counter()
        ev = await s.call("publish", {"event_type": "bench_msg", "topic": "bench", "data": {"n": n}})
        got = await s.call("wait", {"event_type": "bench_msg", "topic": "bench",
                                    "since": ev["seq"] - 1, "timeout_ms": int(FIND_TIMEOUT_S * 1000)})
        if not any(e.get("seq") == ev["seq"] for e in got["events"]):
            raise RuntimeError(f"seq {ev['seq']} not returned by wait: {got}")
        return time.perf_counter() - start


async def sender_loop(side, sender, deadline, errors):
    """Messages one sender got accepted before the deadline; its first failure ends it and is
    kept in `errors` (one failing sender must not cancel the others mid-call)."""
    sent = 0
    try:
        async with Session(side.url, side.headers) as s:
            while time.perf_counter() < deadline:
                await side.send(s, sender, sent)
                sent += 1
    except Exception as e:  # noqa: BLE001 - reported below, with its type
        errors.append(f"{type(e).__name__}: {e}")
    return sent


async def main():
    kind, url = sys.argv[1], sys.argv[2]
    side = AgentMail(url, sys.argv[3] if len(sys.argv) > 3 else "") if kind == "agentmail" \
        else Cco(url, sys.argv[3], sys.argv[4])
    async with Session(side.url, side.headers) as s:
        await side.setup(s, SENDERS)
        await side.round_trip(s, -1)  # warm-up
        times = [await side.round_trip(s, n) for n in range(ROUND_TRIPS)]
    print(f"{kind} round_trip_median_ms={statistics.median(times) * 1000:.2f} (n={len(times)})", flush=True)
    errors = []
    start = time.perf_counter()
    counts = await asyncio.gather(*(sender_loop(side, snd, start + SEND_SECONDS, errors)
                                    for snd in side.senders))
    elapsed = time.perf_counter() - start
    print(f"{kind} senders={len(counts)} messages_per_s={sum(counts) / elapsed:.1f} "
          f"(sent={sum(counts)} in {elapsed:.1f}s, failed senders={len(errors)})")
    for e in sorted(set(errors)):
        print(f"{kind} sender failure: {e}")


if __name__ == "__main__":
    asyncio.run(main())
