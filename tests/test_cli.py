"""The ``litkit`` command and scripts that call ``litkit.run()``, run as a user runs them."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import requests

from conftest import wait_until
from helpers import HTTP_TIMEOUT_S, assert_clean_stop, litkit_command, running

DOUBLER = '''\
import litkit


class Doubler(litkit.LitAPI):
    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        return x * 2

    def encode_response(self, output):
        return {"output": output}
'''


def write(path: Path, source: str) -> Path:
    path.write_text(textwrap.dedent(source))
    return path


def banner_line(stdout: str, label: str) -> str:
    """The text after ``label`` on the banner line that has it, e.g. the curl after "call it:"."""
    lines = [line.split(label, 1)[1].strip() for line in stdout.splitlines() if label in line]
    assert len(lines) == 1, f"expected one {label!r} line in the banner:\n{stdout}"
    return lines[0]


def replay_curl(line: str) -> requests.Response:
    """Send what ``curl -X POST URL -H ... -d BODY [-H ...]`` from the banner would send."""
    words = shlex.split(line)
    assert words[:3] == ["curl", "-X", "POST"] or words[:4] == ["curl", "-N", "-X", "POST"], line
    url = words[words.index("POST") + 1]
    headers = dict(words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H")
    body = words[words.index("-d") + 1]
    return requests.post(url, data=body.encode(), headers=headers, timeout=HTTP_TIMEOUT_S)


# -- litkit serve / litkit demo -------------------------------------------------------------------


def test_serve_a_class_from_a_file(tmp_path: Path) -> None:
    app = write(tmp_path / "app.py", DOUBLER)
    with running([*litkit_command(), "serve", f"{app}:Doubler", "--port", "0"], cwd=tmp_path) as server:
        endpoint = server.wait_for_banner()
        server.wait_for_output(r"Press Ctrl\+C to stop\.")
        stdout = server.stdout
        assert f"litkit: serving Doubler at {endpoint} (JSON)" in stdout

        # The banner's curl line can be pasted as is.
        curl = banner_line(stdout, "call it:")
        assert curl.startswith(f"curl -X POST {endpoint} -H 'Content-Type: application/json' -d "), curl
        response = replay_curl(curl)
        assert response.status_code == 200, response.text
        assert response.json() == {"output": 2}

        response = requests.post(endpoint, json={"input": 21}, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 200, response.text
        assert response.json() == {"output": 42}

        assert_clean_stop(server, signal.SIGTERM)


def test_demo_streams_server_sent_events(tmp_path: Path) -> None:
    with running([*litkit_command(), "demo", "--port", "0"], cwd=tmp_path) as server:
        endpoint = server.wait_for_banner()
        server.wait_for_output(r"Press Ctrl\+C to stop\.")
        assert f"litkit: serving TokenStreamer at {endpoint} (streaming)" in server.stdout
        assert banner_line(server.stdout, "as SSE:").endswith("-H 'Accept: text/event-stream'")
        page = banner_line(server.stdout, "page:").split()[0]  # issue 23: the page that calls the endpoint
        assert page == endpoint.removesuffix("/predict") + "/"
        assert requests.get(page, timeout=HTTP_TIMEOUT_S).headers["Content-Type"].startswith("text/html")
        document = requests.get(page + "openapi.json", timeout=HTTP_TIMEOUT_S).json()
        assert document["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["example"] == {"prompt": "hello from litkit", "max_tokens": 8, "delay": 0.2}

        payload = {"prompt": "red green blue", "max_tokens": 4, "delay": 0}
        headers = {"Accept": "text/event-stream"}
        with requests.post(endpoint, json=payload, headers=headers, stream=True, timeout=HTTP_TIMEOUT_S) as response:
            assert response.status_code == 200, response.text
            assert response.headers["Content-Type"] == "text/event-stream"
            text = response.text
        events = text.split("\n\n")
        assert events[-1] == "", f"the stream must end with a blank line: {text!r}"
        assert all(event.startswith("data: ") for event in events[:-1]), text
        assert events[-2] == "data: [DONE]", text
        chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
        assert chunks == [
            {"index": 0, "token": "red"},
            {"index": 1, "token": "green"},
            {"index": 2, "token": "blue"},
            {"index": 3, "token": "red"},
        ]

        assert_clean_stop(server, signal.SIGINT)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing.py:Doubler", "no such file: missing.py"),
        ("app.py", "expected FILE.py:ClassName or module:ClassName, got 'app.py'"),
        ("app.py:Tripler", "app.py has no attribute 'Tripler'"),
        ("nosuchmodule:Doubler", "No module named 'nosuchmodule'"),
    ],
    ids=["missing-file", "no-class-part", "class-not-in-file", "missing-module"],
)
def test_serve_errors_are_one_clear_line(tmp_path: Path, target: str, message: str) -> None:
    write(tmp_path / "app.py", DOUBLER)
    with running([*litkit_command(), "serve", target, "--port", "0"], cwd=tmp_path) as process:
        code = process.wait_for_exit()
        assert code == 1, process.describe()
        assert process.stderr == f"litkit: error: {message}\n", process.describe()
        assert process.stdout == "", process.describe()


def test_version_help_and_a_mistyped_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (issue 14, a new user's rough edges): no ``--version``; ``serve --help`` and
    ``demo --help`` had no description or example; a mistyped flag showed the top-level usage."""
    import litkit
    from litkit.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out == f"litkit {litkit.__version__}\n"
    for command, example in (("serve", "litkit serve app.py:Echo --port 8000 --workers 2"), ("demo", "litkit demo --port 0")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "until Ctrl+C" in text and "examples:" in text and example in text, text
    with pytest.raises(SystemExit) as exited:
        main(["serve", "app.py:Echo", "--prot", "8000"])
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith("usage: litkit serve "), err
    assert "litkit serve: error: unrecognized arguments: --prot (did you mean --port?) 8000" in err


def test_a_port_in_use_on_the_command_line_says_port_0(tmp_path: Path) -> None:
    """Regression (issue 14): the command printed serve()'s advice, ``pass port=0``."""
    write(tmp_path / "app.py", DOUBLER)
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with running([*litkit_command(), "serve", "app.py:Doubler", "--port", str(port)], cwd=tmp_path) as process:
            assert process.wait_for_exit() == 1, process.describe()
            assert process.stderr == (
                f"litkit: error: port {port} on 127.0.0.1 is already in use by another process; "
                "pass --port 0 to let the system pick a free port, or stop the program holding it\n"
            ), process.describe()
    finally:
        holder.close()


# -- scripts that call litkit.run() ---------------------------------------------------------------


def test_script_without_main_guard_starts_its_workers_once(tmp_path: Path) -> None:
    # No `if __name__ == "__main__":` guard: the workers must not run this file again.
    script = write(
        tmp_path / "unguarded.py",
        '''\
        import litkit

        print("unguarded.py: module body runs", flush=True)


        class Tripler(litkit.LitAPI):
            def predict(self, x):
                return {"output": x["input"] * 3}


        litkit.run(Tripler(), port=0, workers=2)
        ''',
    )
    with running([sys.executable, str(script)], cwd=tmp_path) as server:
        endpoint = server.wait_for_banner()
        workers = server.record_children()
        assert len(workers) == 2, f"expected 2 worker processes, got {workers}"
        for worker in workers:
            assert worker.ppid() == server.pid
            assert worker.cmdline()[:3] == [sys.executable, "-m", "litkit.worker"], worker.cmdline()
            assert worker.children() == []

        response = requests.post(endpoint, json={"input": 14}, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 200, response.text
        assert response.json() == {"output": 42}

        assert sorted(p.pid for p in server.record_children()) == sorted(w.pid for w in workers)
        assert_clean_stop(server, signal.SIGINT)
        assert server.stdout.count("unguarded.py: module body runs") == 1, server.describe()
        assert server.stdout.count("litkit: serving") == 1, server.describe()


def test_serve_a_file_that_calls_run_without_a_main_guard(tmp_path: Path) -> None:
    """Regression (issue 14, bug 6): ``litkit serve app.py:Echo --workers 2`` on the README's
    ``app.py`` (``litkit.run(Echo(), port=8000)`` at the bottom, no main guard) exited with ``worker 0
    failed to start: ... ModuleNotFoundError: No module named 'litkit_app_app'``: the file's own
    ``run()`` served while the file loaded, before its module was registered to travel by value."""
    app = write(
        tmp_path / "app.py",
        """\
        # app.py: no `if __name__ == "__main__":` guard needed; workers never re-run this file
        import litkit

        class Echo(litkit.LitAPI):
            def predict(self, x):
                return {"echo": x}

        litkit.run(Echo(), port=8000)   # blocks; Ctrl+C or SIGTERM stops cleanly
        """,
    )
    with running([*litkit_command(), "serve", f"{app}:Echo", "--port", "0", "--workers", "2"], cwd=tmp_path) as server:
        endpoint = server.wait_for_banner()
        assert len(server.record_children()) == 2
        response = requests.post(endpoint, json={"input": 1}, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 200, response.text
        assert response.json() == {"echo": {"input": 1}}
        assert "app.py called litkit.run() while `litkit serve` loaded it" in server.stdout + server.stderr
        assert server.stdout.count("litkit: serving") == 1, server.describe()
        assert_clean_stop(server, signal.SIGTERM)


def test_script_whose_api_uses_a_sibling_module(tmp_path: Path) -> None:
    write(
        tmp_path / "shouting.py",
        '''\
        def shout(text):
            return text.upper() + "!"
        ''',
    )
    script = write(
        tmp_path / "uses_helper.py",
        '''\
        import litkit
        from shouting import shout


        class Shouter(litkit.LitAPI):
            def predict(self, x):
                return {"output": shout(x["input"])}


        litkit.run(Shouter(), port=0)
        ''',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()  # run from another folder: the script's own folder is what makes the import work
    with running([sys.executable, str(script)], cwd=elsewhere) as server:
        endpoint = server.wait_for_banner()
        response = requests.post(endpoint, json={"input": "hello"}, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 200, response.text
        assert response.json() == {"output": "HELLO!"}
        assert_clean_stop(server, signal.SIGINT)



def test_devices_flag_takes_a_count_or_indices() -> None:
    from litkit.cli import _parse_devices

    assert _parse_devices("2") == 2
    assert _parse_devices("0,2") == [0, 2]
    assert _parse_devices("1,") == [1]
    with pytest.raises(Exception, match="expected a count such as 2 or indices such as 0,2, got 'gpu0'"):
        _parse_devices("gpu0")


# -- every serve() option as a flag, several endpoints, OpenAI, --reload ----------------------------


def test_every_serve_option_is_a_flag_with_serves_default(capsys: pytest.CaptureFixture[str]) -> None:
    from litkit.cli import main, serve_parameters

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, parameter in serve_parameters().items():
        assert f"--{name.replace('_', '-')}" in text, f"serve({name}=...) has no CLI flag"
    assert "(default: 127.0.0.1)" in text and "(default: 1024)" in text and "(default: auto)" in text


def test_serve_flags_reach_the_server(tmp_path: Path) -> None:
    app = write(tmp_path / "app.py", DOUBLER)
    flags = ["--port", "0", "--workers", "2", "--api-path", "/double", "--timeout", "5", "--max-body-size", "200", "--stream", "off"]
    with running([*litkit_command(), "serve", f"{app}:Doubler", *flags], cwd=tmp_path) as server:
        endpoint = server.wait_for_banner()
        assert endpoint.endswith("/double")
        url = endpoint.removesuffix("/double")
        info = requests.get(url + "/info", timeout=HTTP_TIMEOUT_S).json()
        assert (info["workers"], info["timeout"], info["max_body_size"], info["stream"]) == (2, 5, 200, False)
        assert requests.post(endpoint, json={"input": "x" * 300}, timeout=HTTP_TIMEOUT_S).status_code == 413
        assert banner_line(server.stdout, "metrics:") == f"curl {url}/metrics"
        assert_clean_stop(server, signal.SIGTERM)


def test_bad_flag_values_are_one_clear_line(tmp_path: Path) -> None:
    app = write(tmp_path / "app.py", DOUBLER)
    with running([*litkit_command(), "serve", f"{app}:Doubler", "--stream", "maybe"], cwd=tmp_path) as process:
        assert process.wait_for_exit() == 2
        assert "argument --stream: expected auto, on or off, got 'maybe'" in process.stderr


def test_serve_a_dict_of_endpoints_prints_each(tmp_path: Path) -> None:
    app = write(tmp_path / "app.py", DOUBLER + '\n\nendpoints = {"/a": Doubler(), "/b": Doubler()}\n')
    with running([*litkit_command(), "serve", f"{app}:endpoints", "--port", "0"], cwd=tmp_path) as server:
        server.wait_for_output(r"Press Ctrl\+C to stop\.")
        serving = [line for line in server.stdout.splitlines() if line.startswith("litkit: serving")]
        assert len(serving) == 2 and serving[0].endswith("/a (JSON)") and serving[1].endswith("/b (JSON)"), server.stdout
        for curl in [line.split("call it:", 1)[1].split("   (")[0].strip() for line in server.stdout.splitlines() if "call it:" in line]:
            assert replay_curl(curl).json() == {"output": 2}
        assert_clean_stop(server)


CHAT = '''\
import litkit


class Chat(litkit.LitAPI):
    def predict(self, request):
        for word in request["messages"][-1]["content"].split():
            yield word + " "
'''


def test_serve_with_the_openai_spec(tmp_path: Path) -> None:
    import openai

    app = write(tmp_path / "chat.py", CHAT)
    with running([*litkit_command(), "serve", f"{app}:Chat", "--port", "0", "--spec", "openai"], cwd=tmp_path) as server:
        endpoint = server.wait_for_banner()
        server.wait_for_output(r"Press Ctrl\+C to stop\.")
        assert endpoint.endswith("/v1/chat/completions")
        assert "(OpenAI chat)" in server.stdout
        base = endpoint.removesuffix("/chat/completions")
        assert banner_line(server.stdout, "openai:") == f"openai.OpenAI(base_url='{base}', api_key='unused')"
        response = replay_curl(banner_line(server.stdout, "call it:"))
        assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n"), response.text
        client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=HTTP_TIMEOUT_S)
        reply = client.chat.completions.create(model="Chat", messages=[{"role": "user", "content": "hi there"}])
        assert reply.choices[0].message.content == "hi there "
        assert_clean_stop(server)


def _edit(path: Path, source: str) -> None:
    """Rewrite a file so that its modification time surely changes (file systems may keep 1 s)."""
    before = path.stat().st_mtime_ns
    path.write_text(textwrap.dedent(source))
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


def test_reload_serves_the_new_code_when_the_file_changes(tmp_path: Path) -> None:
    """--reload swaps versions as a re-run of serve() does (issue 24): a client calling without
    pause across each reload sees no error (it saw connections refused between the old server
    and the new one before); a new version whose setup() raises leaves the old one serving."""
    app = write(tmp_path / "app.py", DOUBLER)
    with running([*litkit_command(), "serve", f"{app}:Doubler", "--port", "0", "--reload"], cwd=tmp_path) as server:
        endpoint = server.wait_for_banner()
        server.wait_for_output(r"Watching .*app\.py for changes\.")
        answers: list[object] = []
        done = threading.Event()

        def call_without_pause() -> None:
            with requests.Session() as session:  # keep-alive, as most clients
                while not done.is_set():
                    try:
                        answers.append(session.post(endpoint, json={"input": 5}, timeout=HTTP_TIMEOUT_S).json())
                    except requests.RequestException as error:
                        answers.append(error)

        client = threading.Thread(target=call_without_pause)
        client.start()
        try:
            wait_until(lambda: {"output": 10} in answers, message="the first version to answer")
            _edit(app, DOUBLER.replace("x * 2", "x * 3"))
            server.wait_for_output(r"litkit: reloaded .*app\.py")
            wait_until(lambda: answers[-1] == {"output": 15}, message="the edited code to answer on the same URL")

            # A broken edit keeps the previous version serving, and says why.
            _edit(app, "def broken(:\n")
            wait_until(lambda: "reload failed, still serving the previous version: SyntaxError" in server.stderr, message="the reload error")
            # So does a new version whose setup() raises.
            _edit(app, DOUBLER.replace("x * 2", "x * 4").replace("    def predict", "    def setup(self, device):\n        raise RuntimeError('no weights')\n\n    def predict"))
            wait_until(lambda: "reload failed, still serving the previous version: worker 0 failed to start" in server.stderr, message="the failed start")
            count = len(answers)
            wait_until(lambda: len(answers) > count + 3, message="answers after the failed start")
            assert answers[-1] == {"output": 15}

            # Fixing the file serves the fixed code.
            _edit(app, DOUBLER.replace("x * 2", "x * 4"))
            wait_until(lambda: answers[-1] == {"output": 20}, message="the fixed code to answer")
            wait_until(lambda: server.stdout.count("litkit: reloaded") == 2, message="the second reload's banner")
        finally:
            done.set()
            client.join(HTTP_TIMEOUT_S * 2)
        assert [answer for answer in answers if answer not in ({"output": 10}, {"output": 15}, {"output": 20})] == []
        assert_clean_stop(server, worker_tracebacks=1)


def test_what_workers_print_shows_on_the_command_s_terminal(tmp_path: Path) -> None:
    """Workers' stdout and stderr are captured for the dashboard; the litkit command echoes them."""
    app = write(
        tmp_path / "app.py",
        """\
        import sys

        import litkit


        class Talker(litkit.LitAPI):
            def predict(self, x):
                print(f"predict got {x}")
                print("a warning from predict", file=sys.stderr)
                return x
        """,
    )
    with running([*litkit_command(), "serve", f"{app}:Talker", "--port", "0"], cwd=tmp_path) as server:
        endpoint = server.wait_for_banner()
        response = requests.post(endpoint, json=7, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 200, response.text
        server.wait_for_output(r"predict got 7")
        assert_clean_stop(server, signal.SIGTERM)
        assert "a warning from predict" in server.stderr, server.describe()
