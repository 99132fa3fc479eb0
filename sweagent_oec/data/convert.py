"""The `convert` stage: trajectories + evaluation report -> SFT dataset (JSONL, datasets folder, stats).

Per source: resolved filter (rejection sampling on the report) -> read -> final submit ->
repetition filter -> masking / student rewrite -> records; then all sources are mixed (dedup,
weights, per-instance cap, held-out split) and written. A file that cannot be read is skipped
and listed; the batch goes on.

Outputs in `--output DIR`:
  train.jsonl, heldout.jsonl (when held-out ids are given)   one SFT record a line
  dataset/                                                    datasets.DatasetDict.save_to_disk
  stats.json                                                  counts at each filter, turns, tokens, switch steps
  dropped.jsonl                                               every dropped trajectory with the reason
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sweagent_oec.data.actions import canonical_style
from sweagent_oec.data import filters, mixing, sft
from sweagent_oec.data.trajectory import TrajectoryFormatError, find_trajectories
from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class Source:
    name: str
    paths: list[Path]  # .traj files or folders holding them
    report: Path | None = None
    weight: float = 1.0


@dataclass
class Options:
    sources: list[Source]
    output: Path
    resolved_only: bool = True
    switch_step: int | None = None  # for files without role fields and without a sidecar
    student_config: Path | None = None
    instances: str | Path | None = None  # with student_config: re-render the task message from them
    style: str | None = None
    rules: filters.RepetitionRules = field(default_factory=filters.RepetitionRules)
    truncate_loops: bool = False
    max_per_instance: int | None = None
    dedup: bool = True
    seed: int = 0
    heldout: Path | None = None  # file of instance ids, one a line (or a JSON list)
    tokenizer: str | None = None


@dataclass
class Tally:
    """What happened to every trajectory, for stats.json and dropped.jsonl."""

    counts: Counter = field(default_factory=Counter)
    loops_by_rule: Counter = field(default_factory=Counter)
    dropped: list[dict] = field(default_factory=list)

    def drop(self, stage: str, reason: str, path: Path, instance_id: str | None, **detail) -> None:
        self.counts[reason] += 1
        self.dropped.append({"stage": stage, "reason": reason, "instance_id": instance_id, "traj_path": str(path), **detail})


# ---------------------------------------------------------------- inputs


def trajectory_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += find_trajectories(path)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"trajectory path {path} does not exist; pass .traj files or folders holding them")
    return files


def sidecar_switch_step(traj: Path) -> int | None:
    """`<traj>.oec.json` = {"switch_step": N}: the switch step of an external trajectory."""
    sidecar = traj.with_name(traj.name + ".oec.json")
    if not sidecar.is_file():
        return None
    try:
        value = json.loads(sidecar.read_text())["switch_step"]
    except (ValueError, KeyError, TypeError, OSError):
        raise TrajectoryFormatError(f"{sidecar}: expected {{\"switch_step\": N}}") from None
    if value is not None and (not isinstance(value, int) or value < 0):
        raise TrajectoryFormatError(f"{sidecar}: switch_step must be a non-negative integer or null")
    return value


def read_heldout(path: Path) -> set[str]:
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"cannot read held-out ids {path}: {e}; pass a file with one instance id a line") from None
    if text.lstrip().startswith("["):
        try:
            return {str(x) for x in json.loads(text)}
        except ValueError:
            raise UserError(f"held-out file {path} starts like JSON but is not a JSON list; use one instance id a line") from None
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


# ---------------------------------------------------------------- one source


def convert_source(source: Source, options: Options, prompt: sft.StudentPrompt | None, tally: Tally,
                   instances: dict | None = None) -> list[dict]:
    report = filters.load_report(source.report) if source.report else None
    records = []
    for path in trajectory_files(source.paths):
        tally.counts["files"] += 1
        instance_id = path.stem
        status = report.get(instance_id, filters.MISSING) if report is not None else None
        if options.resolved_only and status != filters.RESOLVED:
            tally.drop("resolved_filter", status, path, instance_id)
            continue
        try:
            conv = sft.read_conversation(path, _switch_step(path, options), instance_id)
        except TrajectoryFormatError as e:
            tally.drop("read", "bad_file", path, instance_id, error=str(e))
            continue
        conv = sft.with_final_submit(conv)
        conv = _loop_filter(conv, options, tally)
        if conv is None:
            continue
        instance = instances.get(conv.instance_id) if instances is not None else None
        try:
            record = sft.build_record(conv, _resolved(status), prompt, options.style, instance)
        except TrajectoryFormatError as e:
            tally.drop("rewrite", "bad_file", path, instance_id, error=str(e))
            continue
        if not sft.trained_turns(record):
            tally.drop("masking", "no_trainable_turn", path, instance_id, source=conv.source)
            continue
        if instances is not None and instance is None:
            tally.counts["task_message_kept"] += 1  # not in --instances: the task stays as the model saw it
        tally.counts["converted"] += 1
        records.append(record)
    return records


def _resolved(status: str | None) -> bool | None:
    """The record's `resolved`: unknown (None) without a report entry."""
    return None if status in (None, filters.MISSING) else status == filters.RESOLVED


def _switch_step(path: Path, options: Options) -> int | None:
    sidecar = sidecar_switch_step(path)
    return sidecar if sidecar is not None else options.switch_step


def _loop_filter(conv: sft.Conversation, options: Options, tally: Tally) -> sft.Conversation | None:
    """Drop (or cut) a looping trajectory. A loop made only of masked (student) turns is kept:
    those turns are not trained, and the expert recovering from a student's loop is exactly
    the correction OEC data is for."""
    trained = {j for j, t in enumerate(conv.turns) if t.role != sft.STUDENT}
    loops = [loop for loop in filters.find_loops([t.command for t in conv.turns], options.rules)
             if trained.intersection(loop.repeats)]
    if not loops:
        return conv
    for loop in loops:
        tally.loops_by_rule[loop.rule] += 1
    detail = {"loops": [loop.as_dict() for loop in loops], "source": conv.source}
    if not options.truncate_loops:
        tally.drop("repetition_filter", "loop", conv.path, conv.instance_id, **detail)
        return None
    cut = sft.truncate(conv, loops[0].start)
    if not any(t.role != sft.STUDENT for t in cut.turns):
        tally.drop("repetition_filter", "loop", conv.path, conv.instance_id, **detail, note="nothing trained before the loop")
        return None
    tally.counts["truncated"] += 1
    return cut


# ---------------------------------------------------------------- the stage


def convert(options: Options) -> dict:
    """Run the stage; returns the stats (also written to stats.json). Raises UserError on bad input."""
    if options.resolved_only:
        missing = [s.name for s in options.sources if s.report is None]
        if missing:
            raise UserError(f"source(s) {missing} have no evaluation report; give one (--report / NAME=DIR:REPORT) or pass --keep-unresolved")
    if options.style:
        try:
            canonical_style(options.style)
        except ValueError as e:
            raise UserError(f"{e}") from None
    prompt = sft.student_prompt(options.student_config, options.style) if options.student_config else None
    instances = None
    if options.instances is not None:
        if prompt is None:
            raise UserError("--instances re-renders the task message with the student's template; pass --student-config too")
        from sweagent_oec.tasks.instances import load_instances

        instances = {inst.instance_id: inst for inst in load_instances(options.instances)}
    heldout_ids = read_heldout(options.heldout) if options.heldout else set()
    tally = Tally()
    by_source = {s.name: convert_source(s, options, prompt, tally, instances) for s in options.sources}
    mixed = mixing.mix(by_source, {s.name: s.weight for s in options.sources}, options.max_per_instance,
                       heldout_ids, options.seed, options.dedup)
    style = prompt.style if prompt is not None else (canonical_style(options.style) if options.style else None)
    stats = _stats(options, style, tally, by_source, mixed)
    _write(options.output, mixed, stats, tally)
    if not mixed.train and not mixed.heldout:
        raise UserError(f"no trajectory survived the filters ({_summary(stats)}); see {options.output / 'dropped.jsonl'}")
    return stats


def _stats(options: Options, style: str | None, tally: Tally, by_source: dict[str, list[dict]], mixed: mixing.MixResult) -> dict:
    records = mixed.train + mixed.heldout
    roles = Counter()
    for record in records:
        for m in record["messages"]:
            roles["trained" if m["train"] else ("masked_assistant" if m["role"] == "assistant" else "context")] += 1
    histogram = Counter("bc" if r["switch_step"] is None or r["source"] == "bc" else str(r["switch_step"]) for r in records)
    counts = dict(tally.counts)
    counts.update({k: v for k, v in mixed.counts.items()})
    counts.update(train=len(mixed.train), heldout=len(mixed.heldout))
    return {
        "counts": {k: counts.get(k, 0) for k in ("files", "bad_file", filters.UNRESOLVED, filters.ERROR, filters.MISSING,
                                                 "loop", "truncated", "no_trainable_turn", "converted", "task_message_kept", "duplicates",
                                                 "weighted_in", "weighted_out", "over_instance_cap", "heldout", "train")},
        "loops_by_rule": dict(tally.loops_by_rule),
        "per_source": {name: {"converted": len(records_), **mixing.per_source(records_)} for name, records_ in by_source.items()},
        "records_by_kind": mixing.per_source(records),
        "turns": {"trained": roles["trained"], "masked_assistant": roles["masked_assistant"], "context_messages": roles["context"]},
        "tokens": _tokens(options.tokenizer, records) if options.tokenizer else None,
        "switch_step_histogram": dict(sorted(histogram.items(), key=lambda kv: (kv[0] == "bc", int(kv[0]) if kv[0].isdigit() else 0))),
        "options": {"resolved_only": options.resolved_only, "repetition": options.rules.describe(),
                    "truncate_loops": options.truncate_loops, "style": style,
                    "student_config": str(options.student_config) if options.student_config else None,
                    "instances": str(options.instances) if options.instances is not None else None,
                    "max_per_instance": options.max_per_instance, "dedup": options.dedup, "seed": options.seed,
                    "sources": {s.name: {"paths": [str(p) for p in s.paths], "report": str(s.report) if s.report else None,
                                         "weight": s.weight} for s in options.sources}},
    }


def _tokens(tokenizer_path: str, records: list[dict]) -> dict:
    """Tokens in trained vs masked message texts (content and tool-call arguments; no template)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load tokenizer {tokenizer_path}: {str(e).splitlines()[0]}; pass a local tokenizer folder") from None
    texts, flags = [], []
    for record in records:
        for m in record["messages"]:
            calls = "".join(c["function"]["name"] + c["function"]["arguments"] for c in m.get("tool_calls") or [])
            texts.append((m.get("content") or "") + calls)
            flags.append(m["train"])
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []
    trained = sum(n for n, f in zip(lengths, flags) if f)
    return {"trained": trained, "masked": sum(lengths) - trained}


def _summary(stats: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in stats["counts"].items() if v)


def _write(output: Path, mixed: mixing.MixResult, stats: dict, tally: Tally) -> None:
    import datasets

    datasets.disable_progress_bars()  # the command prints its own summary
    output.mkdir(parents=True, exist_ok=True)
    splits = {"train": mixed.train, **({"heldout": mixed.heldout} if mixed.heldout else {})}
    for name, records in splits.items():
        atomic_write_text(output / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    if not mixed.heldout:
        (output / "heldout.jsonl").unlink(missing_ok=True)  # a stale split from an earlier run would mislead
    if mixed.train or mixed.heldout:
        # Save next to the target and rename, so the folder is never half written.
        tmp = Path(tempfile.mkdtemp(dir=output, prefix=".dataset."))
        try:
            datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in splits.items() if v}).save_to_disk(str(tmp / "d"))
            target = output / "dataset"
            if target.exists():
                target.rename(tmp / "old")  # removed with tmp below
            (tmp / "d").rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_text(output / "dropped.jsonl", "".join(json.dumps(d) + "\n" for d in tally.dropped))
    atomic_write_text(output / "stats.json", json.dumps(stats, indent=2) + "\n")
