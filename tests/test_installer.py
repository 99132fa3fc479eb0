"""sweagent_oec.installer: pip's settings read and handed to uv, installs by uv and by pip, fallbacks."""

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from sweagent_oec import installer
from sweagent_oec.errors import UserError


def _pip_env(monkeypatch, tmp_path: Path, conf: str, **env) -> None:
    """pip reads `conf` last (over the machine's own pip.conf files) and no PIP_* variable but `env`."""
    path = tmp_path / "pip.conf"
    path.write_text(conf)
    for name in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_pip_settings_merge_sections_and_environment(monkeypatch, tmp_path):
    _pip_env(monkeypatch, tmp_path, "[global]\nindex-url = https://a.example/simple\nfind-links = /w1\n"
             "extra-index-url =\n    file:///x/simple\n    file:///y/simple\ntimeout = 5\n"
             "[install]\nfind-links = /w2\n[freeze]\nall = true\n", PIP_NO_CACHE_DIR="1")
    settings = installer.pip_settings(sys.executable)
    assert settings["index-url"] == "https://a.example/simple"
    assert settings["find-links"] == "/w2"  # [install] over [global]
    assert settings["extra-index-url"] == "file:///x/simple file:///y/simple"  # a multi-line value
    assert settings["no-cache-dir"] == "1" and "all" not in settings  # [freeze] is another command's
    args, env = installer.uv_command(settings)
    pairs = set(zip(args[::2], args[1::2]))  # with whatever this machine's own /etc/pip.conf adds
    assert pairs >= set([("--index-url", "https://a.example/simple"), ("--find-links", "/w2"),
                         ("--extra-index-url", "file:///x/simple"), ("--extra-index-url", "file:///y/simple"),
                         ("--index-strategy", "unsafe-best-match")])
    assert args.index("file:///x/simple") < args.index("file:///y/simple")  # pip's order of the extra indexes
    assert env["UV_NO_CACHE"] == "1"


def test_a_setting_uv_cannot_honour_leaves_the_install_to_pip():
    assert installer.uv_command({"only-binary": ":all:"}) is None
    assert installer.uv_command({"trusted-host": "mirror.local"}) is None
    args, env = installer.uv_command({"timeout": "60", "cert": "/etc/ca.pem", "constraint": "/c1 /c2"})
    assert args == ["--constraint", "/c1", "--constraint", "/c2", "--index-strategy", "unsafe-best-match"]
    assert env == {"SSL_CERT_FILE": "/etc/ca.pem"}


def _wheel(folder: Path, name: str, version: str, requires: str = "") -> Path:
    """A pure-Python wheel of one module `name` whose VERSION is `version` (depending on `requires`, if given)."""
    dist = f"{name}-{version}"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.py", f"VERSION = {version!r}\n")
        z.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                   + (f"Requires-Dist: {requires}\n" if requires else ""))
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return path


@pytest.mark.parametrize("tool", ["uv", "pip"])
def test_install_honours_pip_settings_by_uv_and_by_pip(tool, monkeypatch, tmp_path):
    """Two wheel folders: [install] names the one with 2.0, [global] (which [install] overrides for pip) the one
    with 3.0. Both tools take 2.0, as pip would, and never reach an index (no-index)."""
    global_dir, install_dir = tmp_path / "global", tmp_path / "install"
    global_dir.mkdir(), install_dir.mkdir()
    _wheel(global_dir, "oecprobe", "3.0")
    _wheel(install_dir, "oecprobe", "2.0", requires="oecextra")
    _wheel(install_dir, "oecextra", "1.0")  # a dependency the install must leave out (as vLLM's CUDA extras)
    _pip_env(monkeypatch, tmp_path, f"[global]\nno-index = true\nfind-links = {global_dir}\n"
             f"[install]\nfind-links = {install_dir}\n")
    monkeypatch.setenv("OEC_CACHE_DIR", str(tmp_path / "cache"))
    if tool == "pip":
        monkeypatch.setenv("OEC_NO_UV", "1")
    else:  # uv itself comes from the registry with the machine's own pip settings, then the test's apply
        monkeypatch.delenv("PIP_CONFIG_FILE")
        uv = installer.uv_binary(tmp_path / "uv.log")
        if uv is None:
            pytest.skip("uv could not be installed here (no registry)")
        monkeypatch.setenv("PIP_CONFIG_FILE", str(tmp_path / "pip.conf"))
    log = tmp_path / "install.log"
    plan = installer.uv_plan(log)
    assert (plan is not None) == (tool == "uv")
    installer.make_venv(tmp_path / "venv", log, plan)
    python = tmp_path / "venv" / "bin" / "python"
    assert ("uv venv" in log.read_text()) == (tool == "uv")
    installer.install(python, ["oecprobe"], log, "installing the probe", plan, exclude=("oecextra",))
    out = subprocess.run([python, "-c", "import oecprobe; print(oecprobe.VERSION)"], capture_output=True, text=True)
    assert out.stdout.strip() == "2.0"
    # Compiled at install by both (imports read bytecode even where PYTHONDONTWRITEBYTECODE forbids writing it later).
    assert list(python.parent.parent.glob("lib/python*/site-packages/__pycache__/oecprobe.*.pyc"))
    assert ("uv pip install" in log.read_text()) == (tool == "uv")
    assert subprocess.run([python, "-c", "import oecextra"], capture_output=True).returncode != 0
    # uv never fetches an excluded package; pip installs it, then it is removed.
    assert ("--excludes" in log.read_text()) == (tool == "uv")


def test_a_failed_install_is_one_line_naming_its_log(monkeypatch, tmp_path):
    _pip_env(monkeypatch, tmp_path, "[global]\nno-index = true\n")
    monkeypatch.setenv("OEC_NO_UV", "1")
    venv.create(tmp_path / "venv", with_pip=True)
    with pytest.raises(UserError) as e:
        installer.install(tmp_path / "venv" / "bin" / "python", ["oecprobe-does-not-exist"], tmp_path / "i.log", "installing it",
                          installer.uv_plan(tmp_path / "i.log"))
    assert "installing it failed" in str(e.value) and str(tmp_path / "i.log") in str(e.value) and "\n" not in str(e.value)


def test_no_uv_without_a_pip_to_install_it(monkeypatch, tmp_path):
    """uv is installed by this interpreter's pip: an interpreter without one gets no uv (pip installs), and
    a half-made uv folder from a killed run is never taken as installed."""
    monkeypatch.setenv("OEC_CACHE_DIR", str(tmp_path / "cache"))
    venv.create(tmp_path / "bare", with_pip=False)
    monkeypatch.setattr(installer.sys, "executable", str(tmp_path / "bare" / "bin" / "python"))
    assert installer.uv_binary(tmp_path / "uv.log") is None
    assert not (tmp_path / "cache" / installer.UV_PIN.replace("==", "-") / ".oec-installed").exists()


def test_index_credentials_never_reach_the_log(tmp_path):
    """pip's settings may name an index as https://user:token@host; the command line logged for every setup step
    (the main job's server log, vLLM's install log) shows the URL without its token."""
    args, _ = installer.uv_command({"index-url": "https://alice:s3cr3t-t0ken-value@pypi.corp.example/simple"})
    log = tmp_path / "setup.log"
    installer.run_logged([sys.executable, "-c", "pass", *args], log, "a step")
    text = log.read_text()
    assert "s3cr3t-t0ken-value" not in text and "https://alice:***@pypi.corp.example/simple" in text
