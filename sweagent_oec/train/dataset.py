"""SFT records -> token ids + labels that train exactly the messages flagged `train: true`.

Mechanism (works for any chat template that renders a conversation's prefixes as prefixes of
the whole, which the ChatML/Qwen/Llama templates do): render the conversation once, and render
its prefixes to find where each message starts and ends in the text. A trained assistant message
is the text between `prefix(i) + generation prompt` (so the role header is excluded) and the end of
`prefix(i+1)`, minus the whitespace the template puts after the end-of-turn token. The full text is
tokenized once with offsets, and a token is trained when it starts inside a trained span; every
other position gets label -100. TRL keeps a `labels` column as it is, so these masks are the loss.

Records without any `train` flag are behavioural-cloning data: all their assistant turns train.
Records longer than `max_length` are dropped (`drop`) or lose whole leading messages after the
system prompt (`truncate_left`); a record whose trained turn would be cut is dropped and counted.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sweagent_oec.errors import UserError
from sweagent_oec.files import json_lines
from sweagent_oec.tools.specs import TOOL_SPECS, openai_tools

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # the label that torch's cross-entropy (and so TRL/transformers) skips
Truncation = Literal["drop", "truncate_left"]


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    message_starts: list[int]  # token index where each message's rendering starts


@dataclass
class Stats:
    """What became of the records: printed before training and saved next to the checkpoint."""

    records: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    bc_records: int = 0  # records without train flags, all assistant turns trained
    truncated_records: int = 0
    trained_tokens: int = 0
    masked_tokens: int = 0
    trained_turns: int = 0
    uses_tool_calls: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "dropped": dict(self.dropped)}

    def summary(self) -> str:
        dropped = ", ".join(f"{n} {reason}" for reason, n in self.dropped.most_common()) or "none"
        total = self.trained_tokens + self.masked_tokens
        share = self.trained_tokens / total if total else 0.0
        return (
            f"{self.records} records: {self.kept} kept ({self.truncated_records} truncated left), dropped: {dropped}; "
            f"{self.bc_records} without train flags (all assistant turns trained); {self.trained_turns} trained turns; "
            f"tokens: {self.trained_tokens} trained, {self.masked_tokens} masked ({share:.1%} trained)"
        )


# --- reading records -------------------------------------------------------------------------


def load_records(path: str | Path) -> list[dict]:
    """SFT records from a JSONL/JSON file or a `datasets.save_to_disk` folder, checked for `messages`."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"dataset {path} does not exist; pass a JSONL file or a save_to_disk folder from `sweagent-oec convert`")
    if path.is_dir():
        records = _load_from_disk(path)
    else:
        records = _load_json_lines(path)
    if not records:
        raise UserError(f"dataset {path} has no records; check that `sweagent-oec convert` kept some trajectories")
    for i, record in enumerate(records):
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise UserError(
                f"dataset {path} record {i + 1} has no `messages` list of chat messages; "
                "expected SFT records (`messages` with `role`/`content`/`train`) as written by `sweagent-oec convert`"
            )
    return records


def _load_from_disk(path: Path) -> list[dict]:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise UserError(f"dataset folder {path} is not a datasets.save_to_disk folder ({e}); pass a JSONL file or such a folder") from e
    if isinstance(data, datasets.DatasetDict):
        if "train" not in data:
            raise UserError(f"dataset folder {path} has splits {list(data)} but no 'train' split; save the training split as 'train'")
        data = data["train"]
    return data.to_list()


def _load_json_lines(path: Path) -> list[dict]:
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"dataset {path} is not valid JSON ({e}); pass JSONL (one record a line) or a JSON list") from e
        if not isinstance(data, list):
            raise UserError(f"dataset {path} holds a JSON {type(data).__name__}, not a list of records; pass one record a line (JSONL)")
        return data
    records = []
    for n, record in json_lines(text, lambda n, why: f"dataset {path} line {n} is not JSON ({why}); each line must be one SFT record"):
        if not isinstance(record, dict):
            raise UserError(f"dataset {path} line {n} is a JSON {type(record).__name__}, not a record object")
        records.append(record)
    return records


# --- messages as the chat template expects them ------------------------------------------------


def _drop_nones(d: dict) -> dict:
    # Arrow (save_to_disk) fills keys missing from a row with null; templates test `is defined`.
    return {k: v for k, v in d.items() if v is not None}


def normalize_messages(messages: list[dict]) -> list[dict]:
    """Chat messages as templates expect: no null keys, text content, tool-call arguments as dicts."""
    out = []
    for message in messages:
        m = _drop_nones(message)
        m.pop("train", None)
        if isinstance(m.get("content"), list):  # OpenAI content parts -> plain text
            m["content"] = "".join(part.get("text", "") for part in m["content"] if isinstance(part, dict))
        if "content" not in m:
            m["content"] = ""
        if m.get("tool_calls"):
            m["tool_calls"] = [_normalize_call(c) for c in m["tool_calls"]]
        else:
            m.pop("tool_calls", None)
        out.append(m)
    return out


def _normalize_call(call: dict) -> dict:
    call = _drop_nones(call)
    fn = _drop_nones(call.get("function", call))
    args = fn.get("arguments", {})
    if isinstance(args, str):
        # OpenAI sends arguments as a JSON string; HF templates (e.g. Qwen2.5) expect a dict.
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            pass
    if isinstance(args, dict):
        args = _drop_nones(args)
    return {**call, "type": call.get("type", "function"), "function": {**fn, "arguments": args}}


def trained_indices(messages: list[dict]) -> tuple[list[int], bool]:
    """Indices of the messages to train on, and whether the record had no flags (BC: all assistant turns)."""
    if not any(m.get("train") is not None for m in messages):
        return [i for i, m in enumerate(messages) if m.get("role") == "assistant"], True
    return [i for i, m in enumerate(messages) if m.get("train") is True], False


def record_tools(record: dict, messages: list[dict]) -> list[dict] | None:
    """The `tools` to render: the record's own, else the project's tool specs when tool calls appear."""
    tools = record.get("tools")
    if isinstance(tools, str):
        tools = json.loads(tools)
    if tools:
        return tools
    if any(m.get("tool_calls") for m in messages):
        return openai_tools(list(TOOL_SPECS))
    return None


# --- tokenization with per-message masks -------------------------------------------------------


class Unusable(Exception):
    """A record that cannot be trained on; the message is the reason counted in Stats.dropped."""


def _render(tokenizer, messages: list[dict], tools, generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt
    )


def encode(tokenizer, messages: list[dict], train: list[int], tools=None) -> Encoded:
    """Token ids of the whole conversation and labels that are -100 outside the trained messages."""
    prefixes = [""] + [_render(tokenizer, messages[: i + 1], tools) for i in range(len(messages))]
    full = prefixes[-1]
    if not all(full.startswith(p) for p in prefixes):
        raise Unusable("chat template does not render prefixes as prefixes (not prefix-stable)")
    spans = []
    for i in train:
        if i == 0 or messages[i].get("role") != "assistant":
            raise Unusable("train flag on a message that is not an assistant reply")
        header = _render(tokenizer, messages[:i], tools, generation_prompt=True)
        if not full.startswith(header):
            raise Unusable("chat template does not render prefixes as prefixes (not prefix-stable)")
        # What follows the end-of-turn token (ChatML's "\n") is the template's separator, not the reply.
        spans.append((len(header), len(prefixes[i + 1].rstrip())))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    token_starts = [s for s, _ in enc["offset_mapping"]]  # non-decreasing char offsets
    labels = [IGNORE_INDEX] * len(ids)
    for a, b in spans:
        for j in range(bisect_left(token_starts, a), bisect_left(token_starts, b)):
            labels[j] = ids[j]
    message_starts = [bisect_left(token_starts, len(p)) for p in prefixes[:-1]]
    return Encoded(input_ids=ids, labels=labels, message_starts=message_starts)


def encode_record(
    tokenizer, record: dict, max_length: int, truncation: Truncation = "drop"
) -> tuple[Encoded, dict]:
    """Encode one SFT record under the length policy; raise Unusable with the reason to drop it."""
    raw = record["messages"]
    train, bc = trained_indices(raw)
    if not train:
        raise Unusable("no trained turn")
    messages = normalize_messages(raw)
    tools = record_tools(record, messages)
    info = {"bc": bc, "truncated": 0, "turns": len(train), "tool_calls": any("tool_calls" in m for m in messages)}
    try:
        enc = encode(tokenizer, messages, train, tools)
    except Unusable:
        raise
    except Exception as e:  # a template that rejects this conversation (e.g. role order)
        raise Unusable(f"chat template failed ({type(e).__name__})") from e
    if len(enc.input_ids) <= max_length:
        return enc, info
    if truncation == "drop":
        raise Unusable("longer than max_length")
    return _truncate_left(tokenizer, messages, train, tools, enc, max_length, info)


def _truncate_left(tokenizer, messages, train, tools, enc: Encoded, max_length: int, info: dict) -> tuple[Encoded, dict]:
    """Drop the fewest whole messages after the system prompt so the record fits; never a trained one."""
    head = 1 if messages[0].get("role") == "system" else 0
    for k in range(head + 1, len(messages)):
        if messages[k].get("role") == "tool":  # a tool result cannot open a conversation
            continue
        if any(head <= i < k for i in train):
            raise Unusable("truncate_left would cut a trained turn")
        estimate = len(enc.input_ids) - (enc.message_starts[k] - enc.message_starts[head])
        if estimate > max_length:
            continue
        kept = messages[:head] + messages[k:]
        kept_train = [i - (k - head) if i >= k else i for i in train]
        shorter = encode(tokenizer, kept, kept_train, tools)
        if len(shorter.input_ids) <= max_length:
            return shorter, {**info, "truncated": k - head}
    raise Unusable("longer than max_length even after truncate_left")


def build_dataset(tokenizer, records: list[dict], max_length: int, truncation: Truncation = "drop"):
    """A `datasets.Dataset` of `input_ids` + `labels` for TRL, and the Stats of what was kept."""
    import datasets

    stats = Stats(records=len(records))
    rows = []
    for record in records:
        try:
            enc, info = encode_record(tokenizer, record, max_length, truncation)
        except Unusable as e:
            stats.dropped[str(e)] += 1
            continue
        rows.append({"input_ids": enc.input_ids, "labels": enc.labels})
        stats.kept += 1
        stats.bc_records += info["bc"]
        stats.truncated_records += bool(info["truncated"])
        stats.trained_turns += info["turns"]
        stats.uses_tool_calls |= info["tool_calls"]
        trained = sum(label != IGNORE_INDEX for label in enc.labels)
        stats.trained_tokens += trained
        stats.masked_tokens += len(enc.labels) - trained
    if stats.bc_records:
        log.warning(
            "%d record(s) have no `train` flags: treated as behavioural cloning, all their assistant turns are trained",
            stats.bc_records,
        )
    return datasets.Dataset.from_list(rows, features=_features()) if rows else None, stats


def _features():
    import datasets

    return datasets.Features(
        {"input_ids": datasets.Sequence(datasets.Value("int32")), "labels": datasets.Sequence(datasets.Value("int32"))}
    )
