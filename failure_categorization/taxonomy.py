"""The taxonomy as data: failure categories, the rubric for submitted runs, pre-rule settings.

The shipped `taxonomy.yaml` is the default; `--taxonomy FILE` replaces it wholesale. Every
problem with a file is one `UserError` line that names the file and what to fix.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sweagent_oec.errors import UserError

DEFAULT_TAXONOMY = Path(__file__).with_name("taxonomy.yaml")
OTHER = "other"


class Category(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str


class Criterion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str
    anchors: dict[int, str] = Field(default_factory=dict)


class Scale(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: int = 1
    max: int = 5


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scale: Scale = Field(default_factory=Scale)
    criteria: list[Criterion]


class ListingRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    category: str = "context_overflow_from_listing"
    window: int = Field(3, ge=1)
    min_chars: int = Field(20000, ge=1)
    commands: list[str] = Field(default_factory=lambda: ["ls", "find", "tree", "grep"])


class LoopRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    category: str = "infinite_loop"
    repeats: int = Field(5, ge=2)


class SyntaxErrorRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    category: str = "syntax_error"


class ReadingRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    category: str = "endless_file_reading"
    #: the run must have ended on one of these (a limit), with no patch
    exit_statuses: list[str] = Field(default_factory=lambda: ["exit_cost", "exit_context"])
    min_actions: int = Field(10, ge=1)
    read_share: float = Field(0.8, gt=0, le=1)
    commands: list[str] = Field(default_factory=lambda: ["cat", "head", "tail", "less", "more", "nl", "wc", "ls", "find", "tree", "grep", "rg",
                                                         "sed -n", "awk", "git log", "git show", "git grep", "git ls-files",
                                                         "str_replace_editor view"])


class ExitStatusRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    #: exit status (without the "submitted (...)" wrapper) -> category
    map: dict[str, str] = Field(default_factory=dict)


class Prerules(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context_overflow_from_listing: ListingRule = Field(default_factory=ListingRule)
    infinite_loop: LoopRule = Field(default_factory=LoopRule)
    syntax_error: SyntaxErrorRule = Field(default_factory=SyntaxErrorRule)
    endless_file_reading: ReadingRule = Field(default_factory=ReadingRule)
    exit_status: ExitStatusRule = Field(default_factory=ExitStatusRule)


class Taxonomy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    categories: list[Category]
    rubric: Rubric
    prerules: Prerules = Field(default_factory=Prerules)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    @staticmethod
    def label(name: str) -> str:
        """Readable name for plots and tables: `missed_edge_case` -> `Missed edge case`."""
        return name.replace("_", " ").capitalize()


def _problem(taxonomy: Taxonomy) -> str | None:
    """The first thing wrong with a parsed taxonomy, or None."""
    for kind, items in (("category", taxonomy.categories), ("rubric criterion", taxonomy.rubric.criteria)):
        if not items:
            return f"no {kind} defined"
        seen: set[str] = set()
        for item in items:
            if not item.name.strip():
                return f"a {kind} has an empty name"
            if item.name in seen:
                return f"duplicate {kind} {item.name!r}"
            seen.add(item.name)
            if not item.description.strip():
                return f"{kind} {item.name!r} has an empty description"
    if OTHER not in taxonomy.names:
        return f"missing the {OTHER!r} category (unknown judge answers map to it)"
    scale = taxonomy.rubric.scale
    if scale.min >= scale.max:
        return f"rubric scale min ({scale.min}) must be below max ({scale.max})"
    rules = taxonomy.prerules
    targets = [("context_overflow_from_listing", rules.context_overflow_from_listing.category),
               ("infinite_loop", rules.infinite_loop.category),
               ("syntax_error", rules.syntax_error.category),
               ("endless_file_reading", rules.endless_file_reading.category)]
    targets += [(f"exit_status.{status}", cat) for status, cat in rules.exit_status.map.items()]
    for rule, category in targets:
        if category not in taxonomy.names:
            return f"pre-rule {rule} maps to unknown category {category!r}"
    return None


def load_taxonomy(path: Path | str | None = None) -> Taxonomy:
    path = Path(path) if path else DEFAULT_TAXONOMY
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise UserError(f"taxonomy {path}: cannot read it ({e.strerror}); pass an existing YAML file to --taxonomy")
    except yaml.YAMLError as e:
        raise UserError(f"taxonomy {path}: not valid YAML ({str(e).splitlines()[0]}); fix the file")
    if not isinstance(data, dict):
        raise UserError(f"taxonomy {path}: expected a mapping with 'categories' and 'rubric'")
    try:
        taxonomy = Taxonomy.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UserError(f"taxonomy {path}: {where}: {first['msg']}")
    problem = _problem(taxonomy)
    if problem:
        raise UserError(f"taxonomy {path}: {problem}")
    return taxonomy
