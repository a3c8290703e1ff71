"""The echo path before and after a change: ``benchmarks/run.py --quick`` in two checkouts, in turn.

    git worktree add --detach /tmp/before <commit>
    python benchmarks/before_after.py /tmp/before . --rounds 4

Each round runs ``run.py --quick --json`` in each checkout (in A B, then B A order, so drift on a
shared machine spreads over both), each beside raw Tornado in its own run, and prints echo at
concurrency 8 (one worker): CPU per request for the server and for server + worker, and each over
raw Tornado's in the same run, then the min / median / max of each. Compare the ratios: on a busy
2-core machine absolute figures move, ratios measured side by side move less. Both checkouts use
their own ``benchmarks/``: give the older one this checkout's ``scenarios.py`` if its figures
should be counted alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

FIGURES = ("cpu_server_us", "cpu_total_us")


def run_once(checkout: str) -> dict[str, float]:
    """One ``run.py --quick`` in ``checkout``: litkit's figures, and each over raw Tornado's."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "run.json")
        subprocess.run([sys.executable, os.path.join(checkout, "benchmarks", "run.py"), "--quick", "--json", out], cwd=checkout, capture_output=True, text=True, timeout=1800, check=False)
        with open(out) as figures:
            results = json.load(figures)["results"]
    litkit, tornado = results["litkit"], results["tornado"]
    row = {name: litkit[name][0] for name in FIGURES}
    row.update({f"{name} / tornado": litkit[name][0] / tornado[name][0] for name in FIGURES})
    row["echo_c8_rps"] = litkit["echo_c8_rps"][0]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="the checkout before the change")
    parser.add_argument("after", help="the checkout with the change")
    parser.add_argument("--rounds", type=int, default=4, help="runs of each checkout (default 4)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    rows: dict[str, list[dict[str, float]]] = {args.before: [], args.after: []}
    for index in range(args.rounds):
        for checkout in (args.before, args.after) if index % 2 == 0 else (args.after, args.before):
            row = run_once(checkout)
            rows[checkout].append(row)
            print(f"round {index + 1} {checkout}: " + ", ".join(f"{name} {value:.3g}" for name, value in row.items()), flush=True)
    for checkout, runs in rows.items():
        print(f"\n{checkout} ({len(runs)} runs): min / median / max")
        for name in runs[0]:
            values = [run[name] for run in runs]
            print(f"  {name:26} {min(values):8.3g} {statistics.median(values):8.3g} {max(values):8.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
