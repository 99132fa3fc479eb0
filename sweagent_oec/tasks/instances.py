"""Task instances: SWE-smith's schema, plus what a machine without Docker needs (`local`).

The one place the instance format is defined. SWE-smith fields (DESIGN section 4) are kept as
they are; rows may carry more fields, which are kept too. Loaders live below the schema.

SWE-bench rows (SWE-bench, Lite, Verified: they carry `test_patch` and `version`) are read too.
Their `patch` is the gold FIX, not a bug: it is kept as `gold_patch` and `patch` is left empty, so
no runtime injects it; the task state is `base_commit` itself, in SWE-bench's image
(`image_name` from `swebench_image_name` unless the row names one).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import random
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text, json_lines

log = logging.getLogger(__name__)


class LocalTask(BaseModel):
    """How to set up and test the task on this machine, with no Docker.

    The task state is `base_commit` of `repo_dir` with the instance's `patch` (the bug) applied
    and committed; the agent's submission is its diff against that commit.
    """

    model_config = ConfigDict(extra="forbid")

    #: A git repository that holds `base_commit` (absolute path).
    repo_dir: str
    #: A virtualenv with the project's dependencies; its `bin/` goes first on PATH in the session.
    venv: str | None = None
    #: How the venv was built (kept for rebuilding and for the record).
    install_cmd: str | None = None
    #: Runs the test suite from the repo root and prints pytest's `-rA` summary,
    #: e.g. "python -m pytest -rA -p no:cacheprovider tests".
    test_cmd: str = "python -m pytest -rA -p no:cacheprovider"
    #: Extra environment for the session and for tests, e.g. {"PYTHONPATH": "src"}.
    env: dict[str, str] = Field(default_factory=dict)


#: A file header of a git diff (`patch`, `model_patch`): the old and the new path.
DIFF_HEADER = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)


def diff_paths(diff: str) -> list[str]:
    """The files a git diff touches (old and new names), in order, each once."""
    return list(dict.fromkeys(path for pair in DIFF_HEADER.findall(diff or "") for path in pair))


# --- SWE-bench rows --------------------------------------------------------------------------

#: The fields that tell a SWE-bench row (SWE-bench, Lite, Verified, any split) from a SWE-smith one:
#: SWE-smith rows have neither. (SWE-bench rows also carry `environment_setup_commit`, `hints_text`.)
SWEBENCH_FIELDS = ("test_patch", "version")
#: SWE-bench's image registry namespace and tag (its harness's `--namespace`, `--instance_image_tag`),
#: overridable with these environment variables. An empty namespace names local images.
SWEBENCH_NAMESPACE_ENV, SWEBENCH_TAG_ENV = "OEC_SWEBENCH_NAMESPACE", "OEC_SWEBENCH_TAG"


def is_swebench_row(row: dict) -> bool:
    return isinstance(row.get("test_patch"), str) and row.get("version") not in (None, "")


def swebench_image_name(instance_id: str, namespace: str | None = None, tag: str | None = None) -> str:
    """SWE-bench's instance image, as its `TestSpec.instance_image_key` names it:
    `swebench/sweb.eval.x86_64.<id>:latest`, lower case, `__` -> `_1776_` when pulled from a namespace."""
    namespace = os.environ.get(SWEBENCH_NAMESPACE_ENV, "swebench") if namespace is None else namespace
    tag = (os.environ.get(SWEBENCH_TAG_ENV) or "latest") if tag is None else tag
    key = f"sweb.eval.x86_64.{instance_id.lower()}:{tag}"
    return f"{namespace}/{key}".replace("__", "_1776_") if namespace else key


#: Longest instance id, in bytes: `<id>.traj` and friends must fit a file name (255 bytes).
MAX_ID_BYTES = 200


def id_problem(instance_id: str) -> str | None:
    """Why `instance_id` cannot name a folder and files under an output folder, or None when it can.

    Ids become paths (`<out>/<id>/<id>.traj`, `<run>/<id>/report.json`): no path separators, no
    `..`, no control characters, not empty, not hidden, not too long."""
    if not instance_id.strip():
        return "it is empty"
    if "/" in instance_id or "\\" in instance_id:
        return "it contains a path separator"
    if ".." in instance_id:
        return "it contains '..'"
    if instance_id.startswith("."):
        return "it starts with '.'"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in instance_id):
        return "it contains a control or invisible formatting character"
    if len(instance_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return f"it is longer than {MAX_ID_BYTES} bytes"
    return None


def check_instance_id(instance_id: str, where: str = "") -> str:
    """`instance_id`, or a UserError naming it and what is wrong with it."""
    why = id_problem(instance_id)
    if why:
        raise UserError(f"{where}{': ' if where else ''}bad instance id {instance_id!r}: {why}; ids become file names under the output folder.")
    return instance_id


def check_unique_ids(ids: list[str], where: str = "") -> None:
    """Two instances with one id would write the same files: a UserError naming the first duplicate.
    Ids that differ only in case count as one (they share a folder on macOS and Windows)."""
    seen: dict[str, str] = {}
    for iid in ids:
        other = seen.get(iid.casefold())
        if other is not None:
            same = "appears more than once" if other == iid else f"and {other!r} differ only in case"
            raise UserError(f"{where}{': ' if where else ''}instance id {iid!r} {same}; ids must be unique.")
        seen[iid.casefold()] = iid


class Instance(BaseModel):
    model_config = ConfigDict(extra="allow")

    instance_id: str
    repo: str = ""
    patch: str = ""
    FAIL_TO_PASS: list[str] = Field(default_factory=list)
    PASS_TO_PASS: list[str] = Field(default_factory=list)
    problem_statement: str = ""
    image_name: str | None = None
    base_commit: str | None = None
    created_at: str | None = None
    local: LocalTask | None = None

    @model_validator(mode="before")
    @classmethod
    def _swebench_row(cls, data: Any) -> Any:
        # SWE-bench's `patch` is the gold fix: moved to `gold_patch`, so nothing reads it as a bug
        # to inject. Idempotent: a row written back by write_instances_jsonl keeps its meaning.
        if isinstance(data, dict) and is_swebench_row(data):
            if "gold_patch" not in data:
                data = {**data, "gold_patch": data.get("patch") or "", "patch": ""}
            elif (data.get("patch") or "").strip() and data.get("patch") != data.get("gold_patch"):
                # Which one is the fix? Never guess: the wrong guess injects the fix's reverse as a bug.
                raise ValueError("a SWE-bench row (test_patch, version) with both `gold_patch` and a different `patch`; "
                                 "keep SWE-bench's fix in `patch` only")
            else:
                data = {**data, "patch": ""}
            if not data.get("image_name") and data.get("instance_id"):
                data["image_name"] = swebench_image_name(str(data["instance_id"]))
        return data

    @property
    def is_swebench(self) -> bool:
        """A SWE-bench task: the agent starts at `base_commit`, graded by SWE-bench's harness."""
        extra = self.model_extra or {}
        return isinstance(extra.get("gold_patch"), str) and is_swebench_row(extra)

    @field_validator("instance_id")
    @classmethod
    def _safe_id(cls, v: str) -> str:
        why = id_problem(v)
        if why:
            raise ValueError(f"bad instance id {v!r}: {why}; ids become file names under the output folder")
        return v

    @field_validator("FAIL_TO_PASS", "PASS_TO_PASS", mode="before")
    @classmethod
    def _json_list(cls, v: Any) -> Any:
        # SWE-bench-style datasets store these lists as JSON strings.
        if isinstance(v, str):
            return json.loads(v) if v.strip() else []
        return v if v is not None else []

    @field_validator("created_at", mode="before")
    @classmethod
    def _stringify_date(cls, v: Any) -> Any:
        return None if v is None else str(v)


# --- loaders ---------------------------------------------------------------------------------

#: A Hugging Face hub dataset name: "owner/name" (no such local path).
_HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


def _parse_row(row: Any, where: str) -> Instance:
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object per instance, got {type(row).__name__}; fix the row or the file.")
    if not row.get("instance_id"):
        raise UserError(f"{where}: row has no 'instance_id'; every instance needs one.")
    if isinstance(row["instance_id"], str):
        check_instance_id(row["instance_id"], where)
    try:
        return Instance.model_validate(row)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{where}: instance {row['instance_id']!r} field {field!r}: {first['msg']}; fix the row.") from None


def _load_json_file(path: Path) -> list[Instance]:
    text = path.read_text()
    if path.suffix != ".jsonl":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            # More than one line of JSON objects is JSONL whatever the file is called.
            if e.msg != "Extra data":
                raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); give a JSON or JSONL file of instances.") from None
        else:
            rows = data if isinstance(data, list) else [data]
            return [_parse_row(row, f"{path}[{i}]") for i, row in enumerate(rows)]
    lines = json_lines(text, lambda n, why: f"{path}:{n}: not valid JSON ({why}); each line of a JSONL file must be one instance.")
    return [_parse_row(row, f"{path}:{lineno}") for lineno, row in lines]


def _rows_from_dataset(dataset: Any, where: str, split: str | None) -> list[Instance]:
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        if split is None:  # the usual one, else the only one
            split = "train" if "train" in dataset or len(dataset) != 1 else next(iter(dataset))
        if split not in dataset:
            raise UserError(f"{where}: no split {split!r} (splits: {', '.join(dataset)}); pass one of them with --split.")
        dataset = dataset[split]
    return [_parse_row(row, f"{where} row {i}") for i, row in enumerate(dataset)]


#: Hub datasets of the SWE-bench family publish `test` (and `dev`) splits, no `train`.
_SWEBENCH_HUB = re.compile(r"^(SWE-bench|princeton-nlp)/SWE-bench([_-][\w.-]+)?$", re.I)


def default_split(source: str | Path) -> str:
    """The split a hub name is read with when none is given: `test` for SWE-bench, else `train`."""
    return "test" if _SWEBENCH_HUB.match(str(source)) else "train"


def load_instances(source: str | Path, split: str | None = None) -> list[Instance]:
    """Instances from a JSON file (one object or a list), a JSONL file, a `datasets` folder
    (`save_to_disk`), a Hugging Face dataset name such as `SWE-bench/SWE-smith`, or `embedded`
    (the embedded task set, built on first use).

    `split` picks a split of a hub dataset (default `default_split(source)`) or of a saved
    `DatasetDict` (default `train`, else its only split); files have none."""
    if str(source) == "embedded":
        from sweagent_oec.tasks.embedded import embedded_instances_path  # it loads through this function

        source = embedded_instances_path()
    path = Path(source).expanduser()
    if path.is_dir():
        import datasets

        try:
            dataset = datasets.load_from_disk(str(path))
        except FileNotFoundError:
            raise UserError(f"{path}: not a `datasets` folder (no dataset_info.json/state.json); give a dataset saved with save_to_disk, or a JSON/JSONL file.") from None
        return _rows_from_dataset(dataset, str(path), split)
    if path.is_file():
        if split is not None:
            raise UserError(f"{path}: a JSON/JSONL file has no splits; drop --split {split} (it is for `datasets` folders and hub names).")
        return _load_json_file(path)
    if _HUB_NAME.match(str(source)):
        import datasets

        split = split or default_split(source)
        try:
            dataset = datasets.load_dataset(str(source), split=split)
        except Exception as e:  # offline, unknown name, or no such split: all mean "cannot use it"
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot load Hugging Face dataset {source!r} (split {split!r}): {reason[:200]}; this machine may be offline: save it with `save_to_disk` or as JSONL elsewhere and pass that path.") from None
        return _rows_from_dataset(dataset, str(source), split)
    raise UserError(f"{source}: no such file or folder, and not a Hugging Face dataset name (owner/name); check the path.")


#: File extensions of the languages instances are written in (their patch's files).
LANGUAGE_EXTENSIONS = {
    "python": (".py", ".pyx", ".pyi"), "go": (".go",), "rust": (".rs",), "java": (".java",), "c": (".c", ".h"),
    "cpp": (".cc", ".cpp", ".cxx", ".hpp", ".hh"), "javascript": (".js", ".jsx", ".mjs", ".cjs", ".ts", ".tsx"),
    "php": (".php",), "ruby": (".rb",), "csharp": (".cs",), "kotlin": (".kt",), "scala": (".scala",),
}


def instance_language(instance: Instance) -> str | None:
    """The row's own `language` field, else the language of most source files its patch (the bug,
    or SWE-bench's gold fix) touches; None when no file has a known extension."""
    own = (instance.model_extra or {}).get("language")
    if isinstance(own, str) and own.strip():
        return own.strip().lower()
    diff = instance.patch or (instance.model_extra or {}).get("gold_patch") or ""
    votes = Counter(lang for path in diff_paths(diff) for lang, exts in LANGUAGE_EXTENSIONS.items() if path.endswith(exts))
    return votes.most_common(1)[0][0] if votes else None


def skip_instances(instances: list[Instance], *, empty_problem_statement: bool = False,
                   languages: list[str] | None = None) -> tuple[list[Instance], Counter]:
    """Drop rows an agent cannot work on: those with a blank problem statement (when asked) and
    those not in `languages` (by `instance_language`; unknown counts as not in). Returns the kept
    rows, in order, and how many were skipped for each reason; logs one line when any were."""
    wanted = {lang.strip().lower() for lang in languages or [] if lang.strip()}
    kept, skipped = [], Counter()
    for instance in instances:
        if empty_problem_statement and not instance.problem_statement.strip():
            skipped["empty problem statement"] += 1
        elif wanted and (lang := instance_language(instance)) not in wanted:
            skipped[f"language {lang or 'unknown'}"] += 1
        else:
            kept.append(instance)
    if skipped:
        log.warning("skipped %d of %d instances (%s)", sum(skipped.values()), len(instances),
                    ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items())))
    return kept, skipped


def parse_slice(spec: str) -> slice:
    """'0:10' -> slice(0, 10); '5' -> slice(5); '::2' -> slice(None, None, 2) (as SWE-agent reads --slice)."""
    parts = spec.split(":")
    if not spec.strip() or len(parts) > 3:
        raise UserError(f"bad slice {spec!r}; write start:stop[:step], e.g. 0:10.")
    try:
        values = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise UserError(f"bad slice {spec!r}; start, stop and step must be integers, e.g. 0:10.") from None
    if len(values) == 1:
        return slice(values[0])
    if len(values) == 3 and values[2] == 0:
        raise UserError(f"bad slice {spec!r}; the step cannot be 0.")
    return slice(*values)


def select_instances(
    instances: list[Instance],
    slice: str | None = None,
    filter: str | None = None,
    shuffle: bool = False,
    seed: int = 42,
) -> list[Instance]:
    """Shuffle (seeded), keep ids matching `filter` (re.match, like SWE-agent), then take `slice`."""
    selected = list(instances)
    if shuffle:
        random.Random(seed).shuffle(selected)
    if filter:
        try:
            pattern = re.compile(filter)
        except re.error as e:
            raise UserError(f"bad --filter regex {filter!r}: {e}; fix the pattern.") from None
        selected = [i for i in selected if pattern.match(i.instance_id)]
    if slice:
        selected = selected[parse_slice(slice)]
    return selected


def get_instance(instances: list[Instance], instance_id: str, source: str | Path | None = None) -> Instance:
    """The instance with this id; a UserError naming the file and the closest id when there is none."""
    for instance in instances:
        if instance.instance_id == instance_id:
            return instance
    where = f" in {source}" if source is not None else ""
    close = difflib.get_close_matches(instance_id, [i.instance_id for i in instances], n=1, cutoff=0.0)
    hint = f"; did you mean {close[0]!r}?" if close else "; the source has no instances."
    raise UserError(f"no instance {instance_id!r}{where} ({len(instances)} instances){hint}")


def write_instances_jsonl(path: Path | str, instances: list[Instance]) -> None:
    """One instance per line, written atomically (readers never see half a file)."""
    atomic_write_text(path, "".join(json.dumps(i.model_dump(mode="json"), ensure_ascii=False) + "\n" for i in instances))


#: A branch of an instance's rollout (`<id>__b<s>`, see sweagent_oec/branching.py): the same task.
BRANCH_ID = re.compile(r"^(?P<instance>.+)__b\d+$")


def with_branches(instances: list[Instance], ids: list[str] | set[str]) -> list[Instance]:
    """The instances, plus one copy under each branch id in `ids` whose instance is among them, so
    every branch is evaluated (and reported) as an instance of its own against its task's tests."""
    known = {i.instance_id: i for i in instances}
    extra = []
    for iid in sorted(set(ids) - set(known)):
        match = BRANCH_ID.match(iid)
        if match and match["instance"] in known:
            extra.append(known[match["instance"]].model_copy(update={"instance_id": iid}))
    return instances + extra
