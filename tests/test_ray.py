"""run-batch on a real multi-node Ray cluster on this machine (a head and two worker nodes, each its
own raylet), wholly on 127.0.0.1."""

import json
import os
import threading
import time

import pytest

# Keep Ray on loopback (FACTS.md): read when Ray is imported, so set before.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from ray.cluster_utils import Cluster  # noqa: E402

from sweagent_oec.batch import BatchRun  # noqa: E402
from sweagent_oec.config import build_config  # noqa: E402
from sweagent_oec.data.trajectory import find_trajectories, load_trajectory  # noqa: E402
from sweagent_oec.harness.predictions import load_predictions  # noqa: E402
from tests.agent_helpers import SOLUTION, tinycalc  # noqa: E402
from tests.openai_server import OpenAIServer, Reply, tool_call  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    os.environ["RAY_TMPDIR"] = str(tmp_path_factory.mktemp("ray"))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}, shutdown_at_exit=True)
    workers = [c.add_node(num_cpus=2, resources={"tinycalc": 4}) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    yield c, workers
    ray.shutdown()
    c.shutdown()


def instances(tmp_path, n):
    base = tinycalc(tmp_path)
    return [base.model_copy(update={"instance_id": f"tiny-{i:02d}"}) for i in range(n)]


def replay_config(executor):
    return build_config({"agent": {"tools": {"parse_function": {"type": "function_calling"}},
                                   "model": {"name": "replay", "replay_path": str(SOLUTION)}}, "executor": executor})


RAY = {"type": "ray", "num_cpus": 1, "resources": {"tinycalc": 1}}


def test_batch_spreads_over_both_nodes_equals_threads_and_resumes(cluster, tmp_path):
    todo = instances(tmp_path, 6)
    state = BatchRun(replay_config(RAY), todo, tmp_path / "ray").run(progress=False)
    assert state.done == 6 and state.counts() == {"submitted": 6}
    threaded = BatchRun(replay_config({"type": "threads"}), todo, tmp_path / "threads", num_workers=3).run(progress=False)
    assert threaded.counts() == state.counts()
    ray_preds, thread_preds = load_predictions(tmp_path / "ray" / "preds.json"), load_predictions(tmp_path / "threads" / "preds.json")
    assert {k: p.model_patch for k, p in ray_preds.items()} == {k: p.model_patch for k, p in thread_preds.items()}
    for name in ("tiny-00.traj", "tiny-05.traj"):  # the same steps, whatever ran them
        ours, theirs = (load_trajectory(next((tmp_path / run).rglob(name))) for run in ("ray", "threads"))
        assert [s.action for s in ours.trajectory] == [s.action for s in theirs.trajectory]
    again = BatchRun(replay_config(RAY), todo, tmp_path / "ray").run(progress=False)
    assert again.skipped == 6 and again.done == 0
    # Instances that take a while (a replayed one takes ~0.1 s: one runner may take all before the other
    # is up) spread over both nodes, recorded per trajectory and counted per node.
    with Counting(0.2).server as server:
        spread = BatchRun(student_config(server), todo, tmp_path / "spread").run(progress=False)
    nodes = {load_trajectory(p).info.model_extra["executor"]["node_id"] for p in find_trajectories(tmp_path / "spread")}
    assert len(nodes) == 2 and len(spread.nodes) == 2 and spread.counts() == {"submitted": 6}


def slow_student(delay):
    def handler(request):
        step = sum(m["role"] == "assistant" for m in request["messages"])
        call = tool_call("submit", {}) if step >= 6 else tool_call("bash", {"command": f"echo {step}"})
        return Reply(content="", tool_calls=[call], delay=delay, prompt_tokens=1000, completion_tokens=100)
    return OpenAIServer(handler)


class Counting:
    """A student that counts its calls in flight at once, cluster-wide; `busy` is set once `slots` are."""

    def __init__(self, delay, slots=4, steps=6):
        self.delay, self.slots, self.steps = delay, slots, steps
        self.slow = False  # True: an instance whose problem statement says SLOW takes 1000 steps
        self.lock, self.flying, self.most, self.busy = threading.Lock(), 0, 0, threading.Event()
        self.server = OpenAIServer(self.handler)

    def handler(self, request):
        with self.lock:
            self.flying += 1
            self.most = max(self.most, self.flying)
            if self.flying >= self.slots:
                self.busy.set()
        time.sleep(self.delay)
        with self.lock:
            self.flying -= 1
        step = sum(m["role"] == "assistant" for m in request["messages"])
        steps = 1000 if self.slow and "SLOW" in json.dumps(request["messages"]) else self.steps
        call = tool_call("submit", {}) if step >= steps else tool_call("bash", {"command": f"echo {step}"})
        return Reply(content="", tool_calls=[call])


def student_config(server, executor=RAY, **model):
    return build_config({"agent": {"tools": {"parse_function": {"type": "function_calling"}},
                                   "model": {"name": "openai/student", "api_base": server.url, "api_key": "k",
                                             "retry": {"retries": 0}, "per_instance_cost_limit": 0, "total_cost_limit": 0,
                                             **model}}, "executor": executor})


def test_a_node_that_dies_mid_batch_loses_nothing(cluster, tmp_path):
    c, workers = cluster
    todo = instances(tmp_path, 8)
    dead = workers[1].node_id
    student = Counting(0.4)
    with student.server as server:
        batch = BatchRun(student_config(server), todo, tmp_path / "out")
        # Once both runners have both their instances mid-run (4 calls in flight), a node goes.
        killer = threading.Thread(target=lambda: (student.busy.wait(120), time.sleep(0.5), c.remove_node(workers[1])))
        killer.start()
        state = batch.run(progress=False)
        killer.join()
    assert student.busy.is_set()
    workers[1] = c.add_node(num_cpus=2, resources={"tinycalc": 4})  # for the tests after this one
    assert state.done == 8 and state.counts() == {"submitted": 8}
    paths = find_trajectories(tmp_path / "out")
    assert sorted(p.stem for p in paths) == [i.instance_id for i in todo]  # each exactly once
    executors = [json.loads(p.read_text())["info"]["executor"] for p in paths]  # every file whole JSON
    assert max(e["attempt"] for e in executors) >= 2  # the lost ones ran again elsewhere, and say so
    # Two threads of the dead node's runner were mid-instance: both ran again, on the live node.
    assert all(e["node_id"] != dead for e in executors if e["attempt"] >= 2)
    assert sum(e["attempt"] >= 2 for e in executors) >= 2
    assert sorted(load_predictions(tmp_path / "out" / "preds.json")) == [i.instance_id for i in todo]


def test_a_node_runs_its_instances_as_threads_of_one_runner(cluster, tmp_path):
    todo = instances(tmp_path, 12)
    student = Counting(0.3)
    with student.server as server:
        state = BatchRun(student_config(server), todo, tmp_path / "out").run(progress=False)
    assert state.counts() == {"submitted": 12}
    executors = [load_trajectory(p).info.model_extra["executor"] for p in find_trajectories(tmp_path / "out")]
    pids = {}
    for e in executors:
        pids.setdefault(e["node_id"], set()).add(e["pid"])
    assert len(pids) == 2 and all(len(p) == 1 for p in pids.values())  # both nodes; one process each
    assert len({p for ps in pids.values() for p in ps}) == 2 and all(e["attempt"] == 1 for e in executors)
    # Each node holds 2 instances (2 CPUs, 1 per instance; 4 tinycalc slots): each runner ran 2 at once
    # (a runner of one thread would make it 2 in all), never more.
    assert student.most == 4


def runner_pids():
    """The processes of this cluster's runners (Ray names them ray::NodeRunner)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and open(f"/proc/{entry}/cmdline", "rb").read().startswith(b"ray::NodeRunner"):
                found.append(int(entry))
        except OSError:
            pass
    return found


def test_a_runner_killed_on_a_live_node_loses_nothing(cluster, tmp_path):
    import signal

    todo = instances(tmp_path, 8)
    student, result = Counting(0.4), []
    with student.server as server:
        batch = BatchRun(student_config(server), todo, tmp_path / "out")
        runs = threading.Thread(target=lambda: result.append(batch.run(progress=False)))
        runs.start()
        assert student.busy.wait(120)
        pids = runner_pids()
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        runs.join()
    assert result[0].counts() == {"submitted": 8}
    executors = [json.loads(p.read_text())["info"]["executor"] for p in find_trajectories(tmp_path / "out")]
    assert sorted(p.stem for p in find_trajectories(tmp_path / "out")) == [i.instance_id for i in todo]
    assert sum(e["attempt"] >= 2 for e in executors) >= 2 and all(e["pid"] != pids[0] for e in executors if e["attempt"] >= 2)


def test_no_runner_left_ends_the_batch_with_one_error_and_keeps_what_finished(cluster, tmp_path, monkeypatch):
    import signal

    from sweagent_oec import ray_executor
    from sweagent_oec.errors import UserError

    todo = instances(tmp_path, 12)
    student, errors = Counting(0.3), []

    def run():
        try:
            BatchRun(student_config(server), todo, tmp_path / "out").run(progress=False)
        except UserError as e:
            errors.append(str(e))

    with student.server as server:
        runs = threading.Thread(target=run)
        runs.start()
        assert student.busy.wait(120)
        monkeypatch.setattr(ray_executor, "NO_RUNNER_WAIT", 3.0)  # (after the runners' start: it counts too)
        while not find_trajectories(tmp_path / "out"):
            time.sleep(0.1)
        for pid in runner_pids():
            os.kill(pid, signal.SIGKILL)
        runs.join(60)
    assert errors and "no Ray runner was ready" in errors[0] and "left for a rerun" in errors[0]
    kept = find_trajectories(tmp_path / "out")
    assert 0 < len(kept) < 12 and all(load_trajectory(p).info.exit_status == "submitted" for p in kept)
    assert sorted(load_predictions(tmp_path / "out" / "preds.json")) == sorted(p.stem for p in kept)


def test_an_instance_that_fails_by_itself_is_recorded_once_not_retried(cluster, tmp_path):
    good, bad = instances(tmp_path, 2)
    bad = bad.model_copy(update={"local": bad.local.model_copy(update={"repo_dir": str(tmp_path / "no-such-repo")})})
    state = BatchRun(replay_config(RAY), [good, bad], tmp_path / "out").run(progress=False)
    assert state.counts() == {"submitted": 1, "exit_environment_error": 1}
    info = load_trajectory(next((tmp_path / "out").rglob(f"{bad.instance_id}.traj"))).info
    assert info.exit_status == "exit_environment_error" and "no-such-repo" in info.exit_reason
    assert info.model_extra["executor"]["attempt"] == 1 and info.model_extra["executor"]["node_id"]


def test_nodes_that_hold_no_instance_are_refused_at_once(cluster, tmp_path):
    from sweagent_oec.errors import UserError

    config = replay_config({"type": "ray", "num_cpus": 1, "resources": {"gpu_like": 1}})
    with pytest.raises(UserError, match="no node of the Ray cluster holds one instance"):
        BatchRun(config, instances(tmp_path, 2), tmp_path / "out").run(progress=False)
    assert find_trajectories(tmp_path / "out") == []
    with pytest.raises(UserError, match="nothing bounds"):
        BatchRun(replay_config({"type": "ray", "num_cpus": 0}), instances(tmp_path, 2), tmp_path / "out2").run(progress=False)


def test_slots_per_node_follow_the_config():
    from sweagent_oec.ray_executor import instance_ask, slots

    ask = instance_ask({"num_cpus": 0.25, "memory": 2 * 2**30, "resources": {"docker": 1}})
    assert ask == {"CPU": 0.25, "memory": 2 * 2**30, "docker": 1.0}
    assert slots({"CPU": 16, "memory": 64 * 2**30, "docker": 8}, ask) == 8  # docker bounds it
    assert slots({"CPU": 1, "memory": 64 * 2**30, "docker": 8}, ask) == 4  # CPU bounds it
    assert slots({"CPU": 16, "memory": 3 * 2**30, "docker": 8}, ask) == 1  # memory bounds it
    assert slots({"CPU": 16, "memory": 64 * 2**30}, ask) == 0  # no docker: no runner there
    assert slots({"CPU": 0.3}, instance_ask({"num_cpus": 0.1})) == 3  # no float rounding loses a slot


def test_a_node_that_joins_mid_batch_is_used(cluster, tmp_path):
    c, workers = cluster
    todo = instances(tmp_path, 24)
    student, result = Counting(0.4), []
    with student.server as server:
        batch = BatchRun(student_config(server), todo, tmp_path / "out")
        runs = threading.Thread(target=lambda: result.append(batch.run(progress=False)))
        runs.start()
        assert student.busy.wait(120)  # both runners at work; then a third node joins (Ray: from the main thread)
        joined = c.add_node(num_cpus=2, resources={"tinycalc": 4})
        runs.join()
    c.remove_node(joined)
    assert result[0].counts() == {"submitted": 24}
    nodes = {load_trajectory(p).info.model_extra["executor"]["node_id"] for p in find_trajectories(tmp_path / "out")}
    assert joined.node_id in nodes and len(nodes) == 3


def test_total_cost_limit_stops_new_work_cluster_wide(cluster, tmp_path):
    todo = instances(tmp_path, 10)
    # $1 per million input tokens: each call costs $0.0011 (1000 in, 100 out at $1/$1); an instance ~$0.0077.
    from sweagent_oec.models.base import BATCH_BUDGET

    before = BATCH_BUDGET.cost
    with slow_student(0.05) as server:
        config = student_config(server, price_per_million_tokens=[1.0, 1.0], total_cost_limit=0.02)
        state = BatchRun(config, todo, tmp_path / "out").run(progress=False)
        ran = find_trajectories(tmp_path / "out")
        assert 0 < len(ran) < 10 and state.done == len(ran)  # it stopped starting instances
        spent = sum(load_trajectory(p).info.model_stats.instance_cost for p in ran)
        assert 0.02 <= spent < 0.02 + 4 * 0.0077  # reached; at most the running ones went past it (4 slots)
        assert BATCH_BUDGET.cost - before == pytest.approx(spent)  # the driver's progress line shows it
        # A rerun does not get a fresh budget: what finished counts, so nothing new starts.
        again = BatchRun(config, todo, tmp_path / "out").run(progress=False)
    assert again.done == 0 and again.skipped == len(ran) and len(find_trajectories(tmp_path / "out")) == len(ran)


def test_eval_on_the_cluster_writes_what_threads_write(cluster, tmp_path):
    from sweagent_oec.harness.evaluate import EvalOptions, evaluate

    todo = instances(tmp_path, 4)
    BatchRun(replay_config({"type": "threads"}), todo, tmp_path / "trajs", num_workers=2).run(progress=False)
    preds = load_predictions(tmp_path / "trajs" / "preds.json")
    preds["tiny-03"] = preds["tiny-03"].model_copy(update={"model_patch": ""})  # one empty patch too
    by_threads = evaluate(todo, preds, EvalOptions(run_id="t", output_dir=tmp_path / "logs", workers=2, progress=False))
    by_ray = evaluate(todo, preds, EvalOptions(run_id="r", output_dir=tmp_path / "logs", progress=False, executor="ray"))
    assert {k: v for k, v in by_ray.items()} == by_threads and by_ray["resolved"] == 3
    for iid in ("tiny-00", "tiny-03"):
        ours, theirs = (json.loads((tmp_path / "logs" / run / iid / "report.json").read_text()) for run in ("r", "t"))
        assert ours == theirs
        assert sorted(p.name for p in (tmp_path / "logs" / "r" / iid).iterdir()) == \
            sorted(p.name for p in (tmp_path / "logs" / "t" / iid).iterdir())
    # Resume: nothing is run again.
    again = evaluate(todo, preds, EvalOptions(run_id="r", output_dir=tmp_path / "logs", progress=False, executor="ray"))
    assert again == by_ray


CHILD = """
import json, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a suite started with 'cmd &' ignores SIGINT
sys.path.insert(0, sys.argv[1])
import ray
from pathlib import Path
from sweagent_oec.batch import BatchRun
from sweagent_oec.config import build_config
from sweagent_oec.tasks.instances import Instance
args = json.loads(sys.argv[2])
from sweagent_oec import ray_executor
ray_executor.INTERRUPT_WAIT = 300.0  # the runners' instances must stop by themselves, not by this wait
ray.init(address=args["address"], include_dashboard=False, log_to_driver=False)
todo = [Instance.model_validate(i) for i in args["instances"]]
try:
    BatchRun(build_config(args["config"]), todo, Path(args["out"])).run(progress=False)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def test_ctrl_c_stops_the_runners_and_keeps_what_finished(cluster, tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    c, _ = cluster
    fast = instances(tmp_path, 4)
    slow = [i.model_copy(update={"instance_id": f"slow-{n}", "problem_statement": i.problem_statement + " SLOW"})
            for n, i in enumerate(instances(tmp_path, 8))]  # 1000 steps: they run until Ctrl-C stops them
    todo, out = fast + slow, tmp_path / "out"
    student = Counting(0.3)
    student.slow = True
    with student.server as server:
        config = {"agent": {"tools": {"parse_function": {"type": "function_calling"}},
                            "model": {"name": "openai/student", "api_base": server.url, "api_key": "k", "retry": {"retries": 0},
                                      "per_instance_cost_limit": 0, "total_cost_limit": 0}}, "executor": RAY}
        args = {"address": c.address, "config": config, "out": str(out), "instances": [i.model_dump(mode="json") for i in todo]}
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(Path(__file__).resolve().parent.parent), json.dumps(args)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        deadline = time.monotonic() + 180
        while len(find_trajectories(out)) < 4 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.1)
        time.sleep(2)  # the slow ones are mid-run on both runners
        child.send_signal(signal.SIGINT)
        stopped = time.monotonic()
        try:
            output, _ = child.communicate(timeout=90)
        finally:
            child.kill()
        assert child.returncode == 130 and "interrupted" in output, output[-2000:]
        assert time.monotonic() - stopped < 60  # the runners stopped their instances (a slow one runs ~300 s)
        kept = find_trajectories(out)
        assert sorted(p.stem for p in kept) == [i.instance_id for i in fast]  # what finished is kept, nothing else
        assert all(load_trajectory(p).info.exit_status == "submitted" for p in kept)  # whole, finished files only
        assert sorted(load_predictions(out / "preds.json")) == [i.instance_id for i in fast]
        # The runners ended with the batch: the cluster's resources are free again.
        deadline = time.monotonic() + 30
        while ray.available_resources().get("tinycalc", 0) < ray.cluster_resources().get("tinycalc") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ray.available_resources().get("tinycalc", 0) == ray.cluster_resources().get("tinycalc")
        student.slow = False
        again = BatchRun(build_config(config), todo, out).run(progress=False)
    assert again.skipped == 4 and again.done == 8 and again.counts() == {"submitted": 12}
