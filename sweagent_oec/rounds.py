"""`sweagent-oec rounds -c ROUNDS.yaml`: iterated OEC rounds (DAgger), resumable.

Round n, in `<output_dir>/round_<n>/`:
  generate       serve the current student, run-batch with switching on `instances` (and, on the same server,
                 each of `more_runs`, e.g. a branching run beside a triggered one: `generate_<name>`)
  eval           grade the OEC trajectories (of every run)
  convert        SFT data from every round so far, each round a source with its weight (aggregation)
  train          fine-tune from the previous round's checkpoint (or the initial one) -> checkpoint/
  student_eval   serve the new checkpoint, run it alone on `heldout`, grade, score
and a row in `<output_dir>/rounds.csv` (plus `rounds.png`). Round n+1's student is round n's
checkpoint, served by the same command template. Stages meet only through files: each is the
stage's own CLI command in a subprocess, so what a round wrote is exactly what a user running the
stages by hand would have. A stage that finished leaves `round_<n>/.done/<stage>`; killed at any
point, a rerun skips what finished (and the stages themselves resume within).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text
from sweagent_oec.serving import free_port, stop_process_group, wait_until_serving

log = logging.getLogger(__name__)
ROUNDS_CSV = "rounds.csv"
COLUMNS = ["round", "student_checkpoint", "trained_checkpoint", "instances", "exit_statuses", "oec_resolved",
           "switched", "mean_switch_step", "mean_student_steps_before_switch", "student_malformed_share",
           "student_malformed_per_step",
           "expert_cost", "sft_records", "sft_records_this_round", "heldout_resolved", "heldout_total",
           "heldout_rate", "heldout_ci_low", "heldout_ci_high"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServeConfig(Strict):
    #: Starts the student's server: a template with {checkpoint}, {port}, {host}. Example:
    #: "python -m vllm.entrypoints.openai.api_server --model {checkpoint} --port {port} --host {host}".
    #: A server that picks its own port and writes {api_base, model} to a file once it answers takes
    #: {info_file} instead: "sweagent-oec serve-student --engine llamacpp --model {checkpoint} --info-file {info_file}".
    command: str
    #: The litellm model name the run configs get for the served student (with {info_file}: the file's).
    model: str = "hosted_vllm/{checkpoint}"
    host: str = "127.0.0.1"
    ready_timeout: float = Field(900, gt=0)
    env: dict[str, str] = Field(default_factory=dict)


class TrainStep(Strict):
    #: Round n trains from round n-1's checkpoint ("previous", DAgger's usual choice) or the initial one.
    start: Literal["previous", "initial"] = "previous"
    #: Extra `sweagent-oec train` arguments, e.g. ["--max-steps", "200", "--lora"].
    args: list[str] = Field(default_factory=list)


class RoundsConfig(Strict):
    output_dir: str = "out/rounds"
    rounds: int = Field(2, ge=1)
    #: Generation instances (any --instances source) and the held-out ones the new student is scored on.
    instances: str
    heldout: str | None = None
    #: Splits of hub datasets or datasets folders (default: each loader's own).
    split: str | None = None
    heldout_split: str | None = None
    #: Run configs: the switching run (its models.<student_index> is the student) and the student alone.
    config: list[str]
    #: More switching runs per round on the same served student, e.g. {"branches": ["branching.yaml"]}: each
    #: is its own generate and eval stage (round_<n>/trajectories_<name>/, eval/<name>/) and its data joins convert.
    more_runs: dict[str, list[str]] = Field(default_factory=dict)
    student_config: list[str] | None = None
    student_index: int = Field(0, ge=0, le=1)
    initial_checkpoint: str
    serve: ServeConfig
    workers: int = Field(2, ge=1)
    #: run-batch / eval extras, e.g. ["--slice", "0:100"] and ["--runtime", "docker"].
    generate_args: list[str] = Field(default_factory=list)
    eval_args: list[str] = Field(default_factory=list)
    convert_args: list[str] = Field(default_factory=list)
    #: Weight of each round's data in every later round's training mix (index 0 = round 1); missing: 1.
    round_weights: list[float] = Field(default_factory=list)
    train: TrainStep = Field(default_factory=TrainStep)

    @field_validator("more_runs")
    @classmethod
    def _run_names(cls, runs: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, configs in runs.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", name) or name in ("gen", "student"):
                raise ValueError(f"run name {name!r}: lowercase letters, digits and _, not 'gen' or 'student'")
            if not configs:
                raise ValueError(f"run {name!r} names no config file")
        return runs


def load_rounds_config(path: Path) -> tuple[RoundsConfig, Path]:
    if not path.is_file():
        raise UserError(f"{path}: no such rounds config file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    try:
        config = RoundsConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise UserError(f"{path}: {problems}") from None
    return config, path.parent.resolve()


class Rounds:
    def __init__(self, config: RoundsConfig, base: Path):
        self.config = config
        self.base = base  # paths in the rounds file are relative to it
        self.out = self._path(config.output_dir)
        self.cli = [sys.executable, "-m", "sweagent_oec.cli"]

    def _path(self, value: str) -> Path:
        path = Path(value)
        return path if path.is_absolute() else (self.base / path)

    def _source(self, value: str | None) -> str | None:
        """An instances source: a path relative to the rounds file where one exists, else as given (hub name, 'embedded')."""
        if value is None:
            return None
        path = self._path(value)
        return str(path) if path.exists() else value

    # ------------------------------------------------------------ the loop

    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        rows = []
        for n in range(1, self.config.rounds + 1):
            rows.append(self.round(n))
            self.write_table(rows)
        return self.out / ROUNDS_CSV

    def checkpoint_for(self, n: int) -> Path:
        """The student that generates round n's data."""
        return self._path(self.config.initial_checkpoint) if n == 1 else self.dir(n - 1) / "checkpoint"

    def dir(self, n: int) -> Path:
        return self.out / f"round_{n}"

    def round(self, n: int) -> dict:
        folder, student = self.dir(n), self.checkpoint_for(n)
        log.info("round %d: student %s", n, student)
        runs = {"": self.config.config, **self.config.more_runs}  # "": the main run
        if not all(self.done(n, _suffixed("generate", name)) for name in runs):
            with self.served(student, folder / "serve_generate.log") as model:
                for name, configs in runs.items():
                    self.stage(n, _suffixed("generate", name), [
                        "run-batch", *self._configs(configs), "-i", self._source(self.config.instances),
                        "-o", str(folder / _suffixed("trajectories", name)), "-w", str(self.config.workers),
                        "--no-progress", *self._split(), *self.config.generate_args,
                        *self._student_overrides(model, switching=True)])
        for name in runs:
            self.stage(n, _suffixed("eval", name), [
                "eval", "--instances", self._source(self.config.instances), *self._split(), "--predictions",
                str(folder / _suffixed("trajectories", name) / "preds.json"), "--run-id", name or "gen",
                "--output-dir", str(folder / "eval"), *self.config.eval_args])
        self.stage(n, "convert", ["convert", *self._sources(n), "-o", str(folder / "sft"), *self._student_prompt(),
                                  *self.config.convert_args])
        start = student if self.config.train.start == "previous" else self._path(self.config.initial_checkpoint)
        self.stage(n, "train", ["train", "-m", str(start), "-d", str(folder / "sft" / "train.jsonl"),
                                "-o", str(folder / "checkpoint"), *self.config.train.args])
        if self.config.heldout and self.config.student_config and not self.done(n, "student_eval"):
            with self.served(folder / "checkpoint", folder / "serve_student_eval.log") as model:
                self.stage(n, "student_run", [
                    "run-batch", *self._configs(self.config.student_config), "-i", self._source(self.config.heldout),
                    "-o", str(folder / "student_eval" / "trajectories"), "-w", str(self.config.workers), "--no-progress",
                    *self._split(heldout=True), *self._student_overrides(model, switching=False)])
            self.stage(n, "student_eval", [
                "eval", "--instances", self._source(self.config.heldout), *self._split(heldout=True),
                "--predictions", str(folder / "student_eval" / "trajectories" / "preds.json"), "--run-id", "student",
                "--output-dir", str(folder / "student_eval" / "eval"), *self.config.eval_args])
        return self.row(n, student)

    # ------------------------------------------------------------ stages

    def done(self, n: int, stage: str) -> bool:
        return (self.dir(n) / ".done" / stage).exists()

    def stage(self, n: int, stage: str, args: list[str]) -> None:
        if self.done(n, stage):
            log.info("round %d: %s done before", n, stage)
            return
        log.info("round %d: %s", n, stage)
        folder = self.dir(n)
        folder.mkdir(parents=True, exist_ok=True)
        logfile = folder / f"{stage}.log"
        with open(logfile, "w") as f:
            result = subprocess.run(self.cli + args, stdout=f, stderr=subprocess.STDOUT, cwd=self.base)
        if result.returncode != 0:
            tail = logfile.read_text().strip().splitlines()[-1:] or ["(no output)"]
            raise UserError(f"round {n}: {stage} failed (exit {result.returncode}): {tail[0]}; log {logfile}")
        atomic_write_text(folder / ".done" / stage, json.dumps({"args": args, "finished": time.time()}) + "\n")

    def _configs(self, paths: list[str]) -> list[str]:
        return [arg for p in paths for arg in ("-c", str(self._path(p)))]

    def _split(self, heldout: bool = False) -> list[str]:
        split = self.config.heldout_split if heldout else self.config.split
        return ["--split", split] if split else []

    def _student_overrides(self, served: dict, switching: bool) -> list[str]:
        key = f"agent.model.models.{self.config.student_index}" if switching else "agent.model"
        return [f"{key}.name={served['model']}", f"{key}.api_base={served['api_base']}"]

    def _student_prompt(self) -> list[str]:
        if not self.config.student_config:
            return []
        return ["--student-config", str(self._path(self.config.student_config[-1])),
                "--instances", self._source(self.config.instances)]

    def _sources(self, n: int) -> list[str]:
        """Every run of every round so far as a convert source (`round_k[_run]=DIR:REPORT`) with its round's weight."""
        args = []
        for k in range(1, n + 1):
            folder = self.dir(k)
            for name in ["", *self.config.more_runs]:
                source = _suffixed(f"round_{k}", name)
                trajectories, report = folder / _suffixed("trajectories", name), folder / "eval" / (name or "gen") / "report.json"
                args += ["--source", f"{source}={trajectories}:{report}"]
                weights = self.config.round_weights
                if k - 1 < len(weights):
                    args += ["--weight", f"{source}={weights[k - 1]}"]
        return args

    # ------------------------------------------------------------ serving

    @contextmanager
    def served(self, checkpoint: Path, logfile: Path) -> Iterator[dict]:
        """The student's server, up and answering, for the duration of the block; stopped after."""
        serve = self.config.serve
        port = free_port(serve.host)
        info_file = logfile.with_suffix(".info.json")
        values = {"checkpoint": str(checkpoint), "port": port, "host": serve.host, "info_file": str(info_file)}
        try:
            command = serve.command.format(**values)
            model = serve.model.format(**values)
        except (KeyError, IndexError) as e:
            raise UserError(f"serve: unknown placeholder {e} (use {{checkpoint}}, {{port}}, {{host}}, {{info_file}})") from None
        uses_info = "{info_file}" in serve.command
        info_file.unlink(missing_ok=True)  # a file left by an earlier, killed server says nothing about this one
        if not checkpoint.exists():
            raise UserError(f"the student checkpoint {checkpoint} does not exist")
        logfile.parent.mkdir(parents=True, exist_ok=True)
        api_base = f"http://{serve.host}:{port}/v1"
        log.info("serving %s: %s", checkpoint, command)
        with open(logfile, "a") as f:
            process = subprocess.Popen(command, shell=True, stdout=f, stderr=subprocess.STDOUT, cwd=self.base,
                                       env={**os.environ, **serve.env}, start_new_session=True)
        try:
            if uses_info:
                info = _wait_for_info(process, info_file, serve.ready_timeout, logfile)
                api_base, model = info["api_base"], info["model"]
            wait_until_serving(process, api_base, serve.ready_timeout, logfile)
            yield {"model": model, "api_base": api_base}
        finally:
            stop_process_group(process, grace=30)

    # ------------------------------------------------------------ the table

    def row(self, n: int, student: Path) -> dict:
        folder = self.dir(n)
        trajs = _trajectories(folder / "trajectories")
        report = _read_json(folder / "eval" / "gen" / "report.json")
        switch_steps = [t["switch_step"] for t in trajs if t["switch_step"] is not None]
        before = [t["switch_step"] if t["switch_step"] is not None else t["student_steps"] for t in trajs
                  if t["exit_status"] != "unreadable"]  # a file that does not parse is no student that took 0 steps
        student_steps = sum(t["student_steps"] for t in trajs)
        malformed = sum(t["student_format_errors"] for t in trajs)
        row = {
            "round": n, "student_checkpoint": str(student), "trained_checkpoint": str(folder / "checkpoint"),
            "instances": len(trajs),
            "exit_statuses": json.dumps(_counts(t["exit_status"] for t in trajs), sort_keys=True),
            "oec_resolved": report.get("resolved", ""),
            "switched": len(switch_steps),
            "mean_switch_step": _mean(switch_steps), "mean_student_steps_before_switch": _mean(before),
            # Of the student's replies, the share that was malformed (re-queried, or handed over on).
            "student_malformed_share": round(malformed / (malformed + student_steps), 4) if malformed + student_steps else "",
            "student_malformed_per_step": round(malformed / student_steps, 4) if student_steps else "",
            "expert_cost": round(sum(t["expert_cost"] for t in trajs), 6),
            "sft_records": _records(folder / "sft" / "train.jsonl"),
            # Converted from this round's runs (the main one and `more_runs`), not earlier rounds'.
            "sft_records_this_round": _records(folder / "sft" / "train.jsonl", under=folder),
        }
        student_report = folder / "student_eval" / "eval" / "student" / "report.json"
        if student_report.exists():
            from sweagent_oec.harness.score import score

            s = score(student_report, [folder / "student_eval" / "trajectories"])
            row.update(heldout_resolved=s.resolved, heldout_total=s.total, heldout_rate=round(s.rate, 4),
                       heldout_ci_low=round(s.low, 4), heldout_ci_high=round(s.high, 4))
        return {c: row.get(c, "") for c in COLUMNS}

    def write_table(self, rows: list[dict]) -> None:
        from io import StringIO

        buffer = StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.out / ROUNDS_CSV, buffer.getvalue())
        try:
            plot_rounds(rows, self.out / "rounds.png")
        except ImportError:
            log.warning("matplotlib is not installed (analysis extra): rounds.png not drawn")


def _wait_for_info(process: subprocess.Popen, path: Path, timeout: float, logfile: Path) -> dict:
    """{api_base, model} from the file a self-porting server writes once it answers; UserError if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = _read_json(path)
        if isinstance(info.get("api_base"), str) and isinstance(info.get("model"), str):
            return info
        if process.poll() is not None:
            tail = logfile.read_text(errors="replace")[-600:] if logfile.exists() else ""
            raise UserError(f"the student server exited with code {process.returncode} before writing {path}; "
                            f"log {logfile}: {tail!r}")
        time.sleep(0.3)
    raise UserError(f"the student server wrote no {path} within {timeout:.0f}s; log {logfile}")


def _suffixed(stem: str, run: str) -> str:
    """A main-run name as it always was (`generate`, `trajectories`), a `more_runs` one with its name."""
    return f"{stem}_{run}" if run else stem


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _trajectories(folder: Path) -> list[dict]:
    """Per generated trajectory: exit status, switch step, student steps and format errors, expert cost."""
    out = []
    for path in sorted(folder.glob("*/*.traj")):
        data = _read_json(path)
        if not data:
            out.append({"exit_status": "unreadable", "switch_step": None, "student_steps": 0, "student_format_errors": 0,
                        "expert_cost": 0.0})
            continue
        info = data.get("info") or {}
        oec = info.get("oec") or {}
        steps = [s for s in data.get("trajectory", []) if isinstance(s, dict)]
        student = [s for s in steps if s.get("model_role") == "student"]
        expert_stats = (oec.get("model_stats") or {}).get("expert") or {}
        out.append({
            "exit_status": str(info.get("exit_status")), "switch_step": oec.get("switch_step"),
            "student_steps": len(student),
            # Malformed student replies sit on the step that followed them, the expert's too when it took over on them.
            "student_format_errors": sum(1 for s in steps for e in (s.get("extra_info") or {}).get("format_errors") or []
                                         if isinstance(e, dict) and e.get("model_role", s.get("model_role")) == "student")
            # and those that ended the run (agent.max_requeries in a row).
            + sum(1 for e in info.get("format_errors") or [] if isinstance(e, dict) and e.get("model_role") == "student"),
            "expert_cost": float(expert_stats.get("instance_cost") or 0.0),
        })
    return out


def _counts(values) -> dict:
    counts: dict = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def _mean(values: list) -> float | str:
    return round(sum(values) / len(values), 3) if values else ""


def _records(path: Path, under: Path | None = None) -> int | str:
    """SFT records in a train.jsonl; with `under`, only those converted from trajectories there."""
    if not path.exists():
        return ""
    count = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        if under is None:
            count += 1
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        count += Path(str(record.get("traj_path", ""))).resolve().is_relative_to(under.resolve())
    return count


#: Fewer held-out instances than this and the figure says its intervals are too wide to read as a finding.
MIN_HELDOUT = 30


def plot_rounds(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    rated = [r for r in rows if r["heldout_rate"] != ""]
    if rated:
        x = [r["round"] for r in rated]
        y = [100 * r["heldout_rate"] for r in rated]
        err = [[100 * (r["heldout_rate"] - r["heldout_ci_low"]) for r in rated],
               [100 * (r["heldout_ci_high"] - r["heldout_rate"]) for r in rated]]
        left.errorbar(x, y, yerr=err, marker="o", capsize=4, color="#2563eb", label="trained student alone, 95% CI")
        sizes = sorted({r["heldout_total"] for r in rated})
        left.set_title(f"held-out resolve rate (n={'/'.join(str(n) for n in sizes)} per round)", fontsize=10)
        left.legend(fontsize=8, loc="upper left")
        if min(sizes) < MIN_HELDOUT:
            left.text(0.5, 0.5, f"n < {MIN_HELDOUT}: intervals too wide\nto read as a finding", ha="center", va="center",
                      transform=left.transAxes, color="#b91c1c", fontsize=10, alpha=0.8)
    else:
        left.text(0.5, 0.5, "no held-out evaluation configured", ha="center", va="center", transform=left.transAxes)
        left.set_title("held-out resolve rate", fontsize=10)
    left.set_xlabel("round")
    left.set_ylabel("% resolved")
    left.set_ylim(-5, 105)
    left.set_xticks(rounds)
    steps = [r["mean_student_steps_before_switch"] for r in rows]
    share = [r["student_malformed_share"] for r in rows]
    right.plot(rounds, [v if v != "" else float("nan") for v in steps], marker="o", color="#c2410c",
               label="student steps before the switch (mean)")
    right.set_ylabel("steps", color="#c2410c")
    right.set_ylim(0, 1.25 * max([v for v in steps if v != ""] + [1]))
    right.set_xlabel("round")
    right.set_xticks(rounds)
    twin = right.twinx()
    twin.plot(rounds, [v if v != "" else float("nan") for v in share], marker="s", color="#475569",
              label="share of student replies malformed")
    twin.set_ylim(-0.05, 1.05)
    twin.set_ylabel("share malformed", color="#475569")
    right.set_title(f"the generating student ({rows[-1]['instances']} instances per round)", fontsize=10)
    lines = right.get_legend_handles_labels(), twin.get_legend_handles_labels()
    right.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=8, loc="center left")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def run_rounds(config_path: Path) -> Path:
    config, base = load_rounds_config(config_path)
    return Rounds(config, base).run()
