"""`sweagent-oec categorize`: argument handling only; the work is in `stage.py`.

Heavy imports (litellm, matplotlib, the stage) happen inside the function so `--help` is fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional

import typer

from sweagent_oec import options


def categorize_command(
    arguments: Optional[List[Path]] = typer.Argument(None, metavar="[TRAJ_DIR | compare A B]", help="Folder of .traj files (one run; or use --run, repeated). Or `compare A B`: agreement of two per-run outputs (<out>/<label>), e.g. the two protocols on one run."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Where results, summaries, plots and the answer cache go."),
    report: Optional[Path] = typer.Option(None, "--report", "-r", help="Aggregate evaluation report.json of TRAJECTORIES: picks its ids_unresolved + ids_error."),
    label: Optional[str] = typer.Option(None, "--label", help="Name of the TRAJECTORIES run in outputs and plots (default: the folder's name)."),
    run: List[str] = typer.Option([], "--run", help="LABEL=TRAJ_DIR[:REPORT]; repeat to compare runs side by side."),
    compare: List[str] = typer.Option([], "--compare", help="[LABEL=]DIR of an earlier run's output (<out>/<label>); repeat. Plots only, no judging."),
    taxonomy: Optional[Path] = typer.Option(None, "--taxonomy", help="Taxonomy YAML (categories, rubric, prerules) (default: the shipped one)."),
    instances: Optional[Path] = options.instances(help="Instances .json/.jsonl or datasets folder: problem statements and gold patches for the judge."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of --instances when it is a datasets folder (default: train, else its only split)."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="litellm model name of the judge, e.g. anthropic/claude-sonnet-4-20250514."),
    judge_api_base: Optional[str] = typer.Option(None, "--judge-api-base", help="Base URL of an OpenAI-compatible judge server."),
    judge_api_key_env: Optional[str] = typer.Option(None, "--judge-api-key-env", help="Name of the environment variable holding the judge's API key."),
    protocol: Literal["default", "paper"] = typer.Option("default", "--protocol", help="default (pre-rules, condensed case with patches, JSON answer) | paper (the OEC paper's judge: free-text answer, temperature 1); see the README."),
    response_format: Optional[Literal["auto", "json_schema", "json_object", "none"]] = typer.Option(None, "--response-format", help="auto (default) | json_schema | json_object | none (auto: json_schema where litellm says the model supports it). Paper: none."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Judge sampling temperature (default: 0; paper: 1)."),
    max_tokens: int = typer.Option(1024, "--max-tokens", help="Cap on each judge answer."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds per judge call."),
    retries: int = typer.Option(4, "--retries", help="Retries on 429, 5xx, timeouts and dropped connections (not on auth errors)."),
    retry_backoff: float = typer.Option(2.0, "--retry-backoff", help="Seconds before the first retry; doubled each time."),
    select_all: bool = typer.Option(False, "--all", help="Categorize every trajectory, not only the report's unresolved and error ones."),
    submitted: bool = typer.Option(False, "--submitted", help="Score runs that submitted a patch on the rubric instead of categorizing failures."),
    workers: int = options.workers(4, help="Concurrent judge calls."),
    cost_limit: Optional[float] = typer.Option(None, "--cost-limit", help="USD: no new judge call once this much was spent; the rest is recorded not_judged."),
    prerules_only: bool = typer.Option(False, "--prerules-only", help="Ask no judge: pre-rules only, everything else not_judged."),
    no_prerules: bool = typer.Option(False, "--no-prerules", help="Send every trajectory to the judge."),
    last_actions: int = typer.Option(10, "--last-actions", help="How many final actions the judge sees in full."),
    max_observation_chars: int = typer.Option(1500, "--max-observation-chars", help="Clip each shown observation to this many characters."),
    max_problem_chars: int = typer.Option(3000, "--max-problem-chars", help="Characters of the problem statement shown."),
    max_patch_chars: int = typer.Option(4000, "--max-patch-chars", help="Characters of the gold and the model patch shown."),
    tools: str = typer.Option("bash,str_replace_editor,submit", "--tools", help="Comma-separated tools whose descriptions the judge sees."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Sort failed (or submitted) trajectories into loss buckets with pre-rules and an LLM judge; `categorize compare A B`: agreement of two outputs."""
    from pydantic import ValidationError
    from rich.console import Console

    from failure_categorization import stage
    from failure_categorization.inputs import RunSpec, load_instances, parse_run_spec
    from failure_categorization.judge import JudgeConfig
    from failure_categorization.judge_input import InputConfig
    from failure_categorization.run import Settings
    from failure_categorization.taxonomy import load_taxonomy
    from sweagent_oec.errors import UserError
    from sweagent_oec.tools.specs import UnknownToolError, check_tools

    console = Console(stderr=True)
    arguments = list(arguments or [])
    if arguments and str(arguments[0]) == "compare" and len(arguments) == 3:
        from failure_categorization.agreement import compare_runs

        result = compare_runs(arguments[1], arguments[2], output_dir)
        kappa = "undefined (one category)" if result["kappa"] is None else f"{result['kappa']:.3f}"
        console.print(f"{result['a']['label']} vs {result['b']['label']}: {result['n']} trajectories judged by both, "
                      f"observed agreement {result['observed_agreement']:.1%}, Cohen's kappa {kappa}; set aside "
                      + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result["set_aside"].items()), highlight=False, soft_wrap=True)
        console.print(f"wrote {output_dir / 'agreement.csv'}, {output_dir / 'agreement.json'}, {output_dir / 'agreement.png'}", highlight=False)
        return
    if len(arguments) > 1:
        raise UserError("give one trajectory folder (use --run LABEL=DIR for several), or `compare A B` with two output folders")
    trajectories = arguments[0] if arguments else None
    if compare:
        if trajectories or run:
            raise UserError("--compare plots earlier outputs; do not combine it with a trajectory folder or --run")
        folders = []
        for item in compare:
            name, sep, folder = item.partition("=")
            folders.append((name, Path(folder)) if sep else (None, Path(item)))
        summaries = stage.compare(folders, output_dir)
        console.print(f"compared {', '.join(summaries)} -> {output_dir}")
        return

    specs = [parse_run_spec(r) for r in run]
    if trajectories is not None:
        specs.insert(0, RunSpec(label or trajectories.resolve().name, trajectories, report))
    elif report or label:
        raise UserError("--report and --label describe the TRAJECTORIES argument; for --run write LABEL=TRAJ_DIR:REPORT")
    if prerules_only and no_prerules:
        raise UserError("--prerules-only and --no-prerules leave nothing to do; drop one")
    if prerules_only and submitted:
        raise UserError("--submitted scores runs on the rubric, which needs a judge; drop --prerules-only")
    if not prerules_only and not judge_model:
        raise UserError("give the judge with --judge-model MODEL (litellm name), or use --prerules-only")
    if protocol == "paper":
        d = InputConfig()  # the default protocol's sizes; the paper's are fixed
        sizes = (("--last-actions", last_actions, d.last_actions), ("--max-observation-chars", max_observation_chars, d.max_observation_chars),
                 ("--max-problem-chars", max_problem_chars, d.max_problem_chars), ("--max-patch-chars", max_patch_chars, d.max_patch_chars))
        clash = [name for name, given in (("--submitted", submitted), ("--prerules-only", prerules_only),
                                          ("--response-format", response_format not in (None, "none")),
                                          *((name, value != default) for name, value, default in sizes)) if given]
        if clash:
            raise UserError(f"{clash[0]} is not part of the paper protocol (a free-text failure category, no pre-rules); "
                            "drop it or use --protocol default")
        response_format = "none"
    response_format = response_format or "auto"
    temperature = temperature if temperature is not None else (1.0 if protocol == "paper" else 0.0)
    if workers < 1 or retries < 0 or last_actions < 1:
        raise UserError("--workers and --last-actions must be at least 1, --retries at least 0")
    try:
        tool_names = check_tools([t.strip() for t in tools.split(",") if t.strip()])
    except UnknownToolError as e:
        raise UserError(f"--tools: {e}")

    try:
        input_cfg = InputConfig(last_actions=last_actions, max_observation_chars=max_observation_chars,
                                max_problem_chars=max_problem_chars, max_patch_chars=max_patch_chars, tools=tool_names)
    except ValidationError as e:
        first = e.errors()[0]
        raise UserError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}")
    settings = Settings(
        taxonomy=load_taxonomy(taxonomy),
        input=input_cfg,
        judge=None if prerules_only else JudgeConfig(
            model=judge_model, api_base=judge_api_base, api_key_env=judge_api_key_env, temperature=temperature,
            max_tokens=max_tokens, timeout=timeout, retries=retries, backoff=retry_backoff, response_format=response_format),
        mode="submitted" if submitted else "unresolved",
        select_all=select_all,
        use_prerules=not no_prerules and protocol == "default",
        protocol=protocol,
        workers=workers,
        cost_limit=cost_limit,
        instances=load_instances(instances, split) if instances else {},
    )
    summaries = stage.categorize(specs, settings, output_dir, show_progress=not no_progress)
    for name, s in summaries.items():
        src = s["by_source"]
        several = f" ({s['instances_with_several_trajectories']} with several trajectories)" if s["instances_with_several_trajectories"] else ""
        console.print(f"{name} ({protocol} protocol): {s['total']} trajectories of {s['instances']} instances{several}: "
                      f"{src['prerule']} by pre-rule, {src['judge']} by the judge, "
                      f"{src['not_judged']} not judged; judge cost ${s['cost_this_run']:.4f} this run", soft_wrap=True, highlight=False)
    console.print(f"outputs in {output_dir}")
