"""Actors: a model together with the agent settings it works with, and its OEC role.

A plain model is one actor with the agent's templates and tools. A switching model is two, the
student and the expert, each possibly with its own templates, tools and history processors (the
paper's student read XML tool docs and the last 5 observations; its expert used native tool
calls and full observations).
"""

from __future__ import annotations

from dataclasses import dataclass

from sweagent_oec.config import AgentConfig, HistoryProcessorConfig, TemplateConfig, ToolsConfig
from sweagent_oec.data.trajectory import EXPERT, STUDENT
from sweagent_oec.models import make_model
from sweagent_oec.models.base import Model
from sweagent_oec.models.switching import SwitchSchedule
from sweagent_oec.tasks.instances import Instance


@dataclass
class Actor:
    role: str | None  # "student" | "expert" | None (no switching)
    model: Model
    templates: TemplateConfig
    tools: ToolsConfig
    history_processors: list[HistoryProcessorConfig]

    #: Model replies a step may take in all (agent.max_requeries).
    max_requeries: int = 3

    @property
    def style(self) -> str:
        return self.tools.parse_function.type

    @property
    def tool_names(self) -> list[str]:
        return self.tools.tool_names()


def build_actors(config: AgentConfig, instance: Instance) -> tuple[list[Actor], SwitchSchedule | None]:
    model = config.model
    if model.name != "switching":
        actor = Actor(None, make_model(model, config.tools.parse_function.type, instance),
                      config.templates, config.tools, config.history_processors, config.max_requeries)
        return [actor], None
    actors = []
    for role, sub in zip((STUDENT, EXPERT), model.models):
        tools = sub.tools or config.tools
        actors.append(Actor(role, make_model(sub, tools.parse_function.type, instance), sub.templates or config.templates,
                            tools, sub.history_processors if sub.history_processors is not None else config.history_processors,
                            config.max_requeries))
    schedule = SwitchSchedule(model.switching_criteria, model.seed, instance.instance_id, model.count_format_errors_as_steps,
                              make_judge=lambda criteria: make_model(criteria.judge, "function_calling", instance))
    return actors, schedule
