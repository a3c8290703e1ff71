"""How Jupyter finds litkit's extension: the config file litkit installs, and the extension points."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "jupyter-config" / "jupyter_server_config.d" / "litkit.json"

pytest.importorskip("jupyter_server", reason="pip install -e '.[test]' installs jupyter_server")


def test_jupyter_server_extension_list_shows_litkit_enabled_and_valid(tmp_path: Path):
    """``jupyter server extension list`` with the shipped file in a config dir it reads (the user's,
    here a temporary one; ``pip install`` puts it in ``<prefix>/etc/jupyter``)."""
    (tmp_path / "jupyter_server_config.d").mkdir()
    shutil.copy(CONFIG, tmp_path / "jupyter_server_config.d" / "litkit.json")
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path), NO_COLOR="1", PYTHONPATH=str(ROOT))
    listing = subprocess.run(
        [sys.executable, "-m", "jupyter_server.extension.serverextension", "list"], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", listing.stdout + listing.stderr)
    section = text.split(f"Config dir: {tmp_path}", 1)[1].split("Config dir:", 1)[0]
    assert "litkit.jupyter enabled" in section, text
    assert re.search(r"litkit\.jupyter\s+\S*\s*OK", section), text


def test_pyproject_installs_the_config_file_where_jupyter_looks():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data_files = project["tool"]["setuptools"]["data-files"]
    assert data_files["etc/jupyter/jupyter_server_config.d"] == [str(CONFIG.relative_to(ROOT))]
    assert project["project"]["optional-dependencies"]["jupyter"] == ["jupyter_server>=2.0"]


def test_the_registry_folder_is_refused_unless_it_is_this_user_s_alone(tmp_path: Path):
    """Issue 25, weak spot: a pre-existing registry folder was used whatever its owner and mode, so
    another local user who made it first could register ports for the route to relay to."""
    from litkit.wire.registration import make_registry_folder

    made = make_registry_folder(str(tmp_path / "fresh"))
    assert os.stat(made).st_mode & 0o777 == 0o700 and make_registry_folder(made) == made  # made, then taken again
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    with pytest.raises(PermissionError, match="has mode 777: others may read or write it"):
        make_registry_folder(str(open_folder))
    (tmp_path / "link").symlink_to(made)
    with pytest.raises(PermissionError, match="is a symlink"):
        make_registry_folder(str(tmp_path / "link"))
    (tmp_path / "file").write_text("")
    with pytest.raises(PermissionError, match="is not a folder"):
        make_registry_folder(str(tmp_path / "file"))
