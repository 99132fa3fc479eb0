"""Put the tool scripts (`tools/bin/*`) into any runtime and on its session's PATH.

They go to `$HOME/.oec_tools/bin` as the session sees it: outside the repo, so they never show
in the agent's diff, and private to the runtime. The editor's undo history lives in
`$HOME/.oec_tools/state`, named by OEC_TOOLS_STATE.
"""

from __future__ import annotations

from importlib import resources

from sweagent_oec.env.runtime import Runtime, RuntimeError_

TOOLS_FOLDER = ".oec_tools"
STATE_VARIABLE = "OEC_TOOLS_STATE"
#: 'true' when `str_replace_editor view` shows large Python files as a file map (the acting model's
#: USE_FILEMAP registry variable; the agent loop exports it).
FILEMAP_VARIABLE = "OEC_USE_FILEMAP"


def tool_scripts() -> dict[str, str]:
    """{script name: source} for every script shipped in tools/bin."""
    folder = resources.files("sweagent_oec.tools") / "bin"
    return {f.name: f.read_text() for f in folder.iterdir() if f.is_file() and not f.name.startswith((".", "_"))}


def install_tools(runtime: Runtime) -> None:
    """Write the scripts into the runtime, make them executable and export PATH and OEC_TOOLS_STATE."""
    home = runtime.run('printf %s "${HOME:-/tmp}"', timeout=30).output.strip() or "/tmp"
    base = f"{home}/{TOOLS_FOLDER}"
    made = runtime.run(f"mkdir -p '{base}/bin' '{base}/state'", timeout=30)
    if made.exit_code != 0:
        raise RuntimeError_(f"cannot make the tools folder {base} in the environment: {made.output.strip()}")
    for name, source in tool_scripts().items():
        runtime.write_file(f"{base}/bin/{name}", source)
    done = runtime.run(f"chmod +x '{base}/bin/'* && export PATH='{base}/bin':\"$PATH\" {STATE_VARIABLE}='{base}/state'",
                       timeout=30)
    if done.exit_code != 0:
        raise RuntimeError_(f"cannot install the tools in {base}: {done.output.strip()}")
