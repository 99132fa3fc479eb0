"""The predictions format (`preds.json`): the one place it is read and written.

`preds.json` is `{instance_id: {"instance_id", "model_name_or_path", "model_patch"}}` (SWE-agent's
and SWE-bench's layout). Reading also accepts a JSON list of predictions and JSONL (one per line).
Predictions come from a file, or from a folder of trajectories (each `.traj`'s `info.submission`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from sweagent_oec.data.trajectory import (
    TrajectoryFormatError,
    find_trajectories,
    load_trajectory,
)
from sweagent_oec.errors import UserError
from sweagent_oec.files import atomic_write_text, json_lines
from sweagent_oec.tasks.instances import check_instance_id

log = logging.getLogger(__name__)


class Prediction(BaseModel):
    model_config = ConfigDict(extra="allow")

    instance_id: str
    model_name_or_path: str = ""
    #: The diff to evaluate; None when the run ended without a submission.
    model_patch: str | None


def model_name_or_path(model: str, expert: str | None = None) -> str:
    """The one `model_name_or_path` convention, in run-batch's preds.json and `.pred` files and in
    merge-preds: the model's name, or `<student>+<expert>` for a switching run."""
    return f"{model}+{expert}" if expert else model


def pred_path(traj_path: Path | str) -> Path:
    """`<out>/<id>/<id>.pred` beside `<id>.traj` (SWE-agent's layout; its merge-preds globs `*.pred`)."""
    return Path(traj_path).with_suffix(".pred")


def write_pred(traj_path: Path | str, pred: Prediction) -> None:
    """One instance's prediction, as SWE-agent writes it beside the trajectory (atomically)."""
    atomic_write_text(pred_path(traj_path), json.dumps(pred.model_dump()) + "\n")


def _parse(path: Path, row: Any, where: str) -> Prediction:
    if not isinstance(row, dict):
        raise UserError(f"{path}: {where} is not a JSON object; each prediction needs instance_id and model_patch")
    if "model_patch" not in row:
        # Catches the common mistake of passing an instances file as predictions.
        raise UserError(f"{path}: {where} has no 'model_patch' key; is this a predictions file (preds.json)?")
    if isinstance(row.get("instance_id"), str):
        check_instance_id(row["instance_id"], f"{path}: {where}")
    try:
        return Prediction.model_validate(row)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "value"
        raise UserError(f"{path}: {where}: bad field '{field}': {first['msg']}") from None


def _add(preds: dict[str, Prediction], pred: Prediction, path: Path, where: str) -> None:
    old = preds.get(pred.instance_id)
    if old is not None and old.model_dump() != pred.model_dump():
        raise UserError(f"{path}: {where}: instance '{pred.instance_id}' appears twice with different predictions")
    preds[pred.instance_id] = pred


def load_predictions(path: Path | str) -> dict[str, Prediction]:
    """Read preds.json (a dict keyed by id, or a list) or JSONL; every problem is one UserError line."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read predictions file {path}: {e}") from None
    preds: dict[str, Prediction] = {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None  # not one JSON document: read it as JSONL below
    if isinstance(data, dict) and "model_patch" in data and isinstance(data.get("instance_id"), str):
        data = [data]  # a JSONL file with a single line
    if isinstance(data, dict):
        for key, row in data.items():
            pred = _parse(path, row, f"entry '{key}'")
            if pred.instance_id != key:
                raise UserError(f"{path}: entry '{key}' holds instance_id '{pred.instance_id}'; keys must be instance ids")
            preds[key] = pred
        return preds
    if isinstance(data, list):
        for i, row in enumerate(data):
            _add(preds, _parse(path, row, f"item {i}"), path, f"item {i}")
        return preds
    if data is not None:
        raise UserError(f"{path}: expected a JSON object keyed by instance id, a list, or JSONL; got {type(data).__name__}")
    for lineno, row in json_lines(text, lambda n, why: f"{path}: line {n} is not valid JSON ({why}); expected preds.json or JSONL"):
        _add(preds, _parse(path, row, f"line {lineno}"), path, f"line {lineno}")
    return preds


def write_predictions(path: Path | str, preds: dict[str, Prediction]) -> None:
    """Write preds.json atomically (readers never see half a file), sorted by instance id."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file name for the predictions, e.g. {path / 'preds.json'}")
    data = {iid: preds[iid].model_dump() for iid in sorted(preds)}
    try:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    except OSError as e:
        raise UserError(f"cannot write predictions to {path}: {e.strerror or e}") from None


def _model_name(traj: Any, folder: Path) -> str:
    """Who made the patch: info.model_name_or_path, the OEC pair, the replayed config, else the folder."""
    info = traj.info
    explicit = getattr(info, "model_name_or_path", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    oec = info.oec
    if oec is not None and oec.student_model and oec.expert_model:
        return model_name_or_path(oec.student_model, oec.expert_model)
    config = traj.replay_config
    if isinstance(config, str):  # SWE-agent stores replay_config as a JSON string
        try:
            config = json.loads(config)
        except json.JSONDecodeError:
            config = None
    if isinstance(config, dict):
        model = (config.get("agent") or {}).get("model") or {}
        name = model.get("name") if isinstance(model, dict) else None
        if isinstance(name, str) and name and name != "switching":
            return name
    return folder.resolve().name


def predictions_from_trajectories(folder: Path | str) -> dict[str, Prediction]:
    """One prediction per finished `.traj` under `folder` (instance id = the file's stem).

    Unreadable and unfinished trajectories are skipped with one warning line each: an unfinished
    run is redone by run-batch, and evaluating it now would count a failure that is not one.
    """
    folder = Path(folder)
    preds: dict[str, Prediction] = {}
    for path in find_trajectories(folder):
        try:
            traj = load_trajectory(path)
        except TrajectoryFormatError as e:
            log.warning("skipping %s", e)
            continue
        if not traj.finished:
            log.warning("skipping %s: the run has not finished (no exit_status)", path)
            continue
        check_instance_id(path.stem, str(path))
        pred = Prediction(instance_id=path.stem, model_name_or_path=_model_name(traj, folder), model_patch=traj.info.submission)
        _add(preds, pred, path, "trajectory")
    return preds


def merge_predictions(inputs: list[Path | str]) -> dict[str, Prediction]:
    """Merge shards: preds.json/JSONL files and trajectory folders. Conflicting duplicates are an error."""
    merged: dict[str, Prediction] = {}
    source: dict[str, Path] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            preds = predictions_from_trajectories(item)
        elif item.is_file():
            preds = load_predictions(item)
        else:
            raise UserError(f"no such predictions file or trajectory folder: {item}")
        for iid, pred in preds.items():
            if iid in merged and merged[iid].model_dump() != pred.model_dump():
                raise UserError(f"instance '{iid}' has different predictions in {source[iid]} and {item}; drop one of the shards")
            merged[iid] = pred
            source.setdefault(iid, item)
    return merged
