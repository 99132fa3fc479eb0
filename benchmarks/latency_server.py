"""A loopback OpenAI-compatible model server with a fixed latency, in its own process (as a vLLM
server would be), for the throughput benchmarks. Each task takes `steps` steps: `echo` commands,
then submit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_SERVER = """
import json, sys, time
sys.path.insert(0, sys.argv[3])
from tests.openai_server import OpenAIServer, Reply, tool_call
latency, steps = float(sys.argv[1]), int(sys.argv[2])
arrived = []
def answer(request):
    arrived.append(time.time())
    done = sum(m["role"] == "assistant" for m in request["messages"]) >= steps - 1
    call = tool_call("submit", {}) if done else tool_call("bash", {"command": "echo hi"})
    return Reply(content="", tool_calls=[call], delay=latency)
with OpenAIServer(answer) as server:
    print(server.url, flush=True)
    for line in sys.stdin:  # "first T": when the first request at or after T arrived (0: none); else the count
        if line.startswith("first "):
            after = [t for t in list(arrived) if t >= float(line.split()[1])]
            print(min(after) if after else 0, flush=True)
        else:
            print(len(server.requests), flush=True)
"""


class LatencyServer:
    """`with LatencyServer(latency, steps) as server: ... server.url ... server.requests() ... server.first_request(t)`"""

    def __init__(self, latency: float, steps: int):
        self.process = subprocess.Popen([sys.executable, "-c", _SERVER, str(latency), str(steps), str(ROOT)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().split()[0]

    def requests(self) -> int:
        """Requests answered so far."""
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def first_request(self, since: float) -> float:
        """When (time.time()) the first request at or after `since` arrived; 0.0 if none did."""
        self.process.stdin.write(f"first {since}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def __enter__(self) -> "LatencyServer":
        return self

    def __exit__(self, *exc) -> None:
        self.process.kill()
