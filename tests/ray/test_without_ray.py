"""Ray is an optional extra: without it ``import litkit`` works and ``backend="ray"`` says which
extra to install (run in a subprocess where importing ray fails, whether or not it is installed)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

BLOCK_RAY = "import sys; sys.modules['ray'] = None  # importing ray now raises ImportError\n"


@pytest.mark.parametrize(
    "call",
    [
        "litkit.serve(apis.Echo(), backend='ray')",
        "litkit.ray_app(apis.Echo())",
    ],
)
def test_the_ray_backend_without_ray_names_the_extra(call):
    script = BLOCK_RAY + "import apis, litkit\ntry:\n    " + call + "\nexcept ImportError as error:\n    print(error)\n"
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True, cwd=pathlib.Path(__file__).parents[1]).stdout
    assert "pip install 'litkit[ray]'" in output


def test_an_unknown_backend_is_an_error(serve):
    import apis

    with pytest.raises(ValueError, match="backend must be 'local' or 'ray', got 'spark'"):
        serve(apis.Echo(), backend="spark")


def test_run_with_the_ray_backend_says_what_to_use_instead():
    """litkit.run() blocks on the local server's terminal loop; with backend="ray" it would have
    deployed and then failed, so it refuses first, naming the command line and serve().wait()."""
    import apis
    import litkit

    with pytest.raises(ValueError, match="litkit serve --backend ray"):
        litkit.run(apis.Echo(), backend="ray")
