"""A loopback OpenAI-compatible model server with a fixed latency, in its own process (as a vLLM
server would be), for the throughput benchmarks. Each task takes `steps` steps: `echo` commands,
then submit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_SERVER = """
import sys
sys.path.insert(0, sys.argv[3])
from tests.openai_server import OpenAIServer, Reply, tool_call
latency, steps = float(sys.argv[1]), int(sys.argv[2])
def answer(request):
    done = sum(m["role"] == "assistant" for m in request["messages"]) >= steps - 1
    call = tool_call("submit", {}) if done else tool_call("bash", {"command": "echo hi"})
    return Reply(content="", tool_calls=[call], delay=latency)
with OpenAIServer(answer) as server:
    print(server.url, flush=True)
    for line in sys.stdin:  # any line: report the request count
        print(len(server.requests), flush=True)
"""


class LatencyServer:
    """`with LatencyServer(latency, steps) as server: ... server.url ... server.requests()`"""

    def __init__(self, latency: float, steps: int):
        self.process = subprocess.Popen([sys.executable, "-c", _SERVER, str(latency), str(steps), str(ROOT)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().split()[0]

    def requests(self) -> int:
        """Requests answered so far."""
        self.process.stdin.write("count\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def __enter__(self) -> "LatencyServer":
        return self

    def __exit__(self, *exc) -> None:
        self.process.kill()
