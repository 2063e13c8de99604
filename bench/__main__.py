"""`make bench`: what the cache is for, measured on the local multi-node swarm.

    python -m bench [--runs N] [--size-mb MB] [--rtt-ms MS] [--mbit MBIT] [--json FILE] [--plot FILE]

Deploys a rehearsal of the dev stack through the manager (msrc-manager), with
cacheHost the cache node's address: the cache runs on msrc-cache and is
registered with the upstream MSR stand-in on msrc-msr; a simulated WAN
(bench/wan.py) on this machine sits between the cache and MSR, and between the
site's clients and MSR. Then measures pulls (registry API with TLS verified,
from this machine, and `docker pull` by the manager's engine): from MSR
directly, from MSR over the WAN by a user with no cache, from MSR over the
WAN by a user who chose the cache (MSR redirects the blobs to it) cold and warm,
with what MSR was asked for, the same warm pull with no WAN, and warm from the
cache's own address; the WAN bytes of a cold pull; the same user's pull through
a site cache chained to a hub cache (site -> hub -> MSR), cold, with the hub
warm, and warm; deploy time next to a bare `docker service create`;
unavailability during a rotation and a restart; and the program's own evaluation
cost. Prints a table (median of N runs, ratio to its floor) and writes JSON and a
PNG plot of the pull times.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def say(message: str) -> None:
    print(message, flush=True)


def machine() -> dict[str, Any]:
    mem_kib = 0
    with open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "memGiB": round(mem_kib / 1024 / 1024),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


PULLS = (
    ("direct", "from MSR, no WAN (floor)", "MSR,\nno WAN"),
    ("wan", "from MSR over the WAN, no cache", "MSR over\nthe WAN"),
    ("userCold", "from MSR over the WAN, user's cache, cold", "MSR over the WAN,\nuser's cache, cold"),
    ("userWarm", "from MSR over the WAN, user's cache, warm", "MSR over the WAN,\nuser's cache, warm"),
    ("userWarmNoWan", "from MSR, no WAN, user's cache, warm", "MSR, no WAN,\nuser's cache, warm"),
    ("cacheWarm", "from the cache's address, warm", "cache's\naddress, warm"),
)
"""The pulls (bench/measure.py): JSON key, table name, plot label."""
PULL_KINDS = (("api", "API pull"), ("dockerPull", "docker pull"))
CHAIN_PULLS = (
    ("chainCold", "both cold"),
    ("chainParentWarm", "site cold, hub warm"),
    ("chainWarm", "site warm"),
)
"""The chained pulls (bench/measure.py), by the API client as the user who chose the site."""


def rows(results: dict[str, Any]) -> list[tuple[str, float | None, float | None, str]]:
    """(measure, value, floor, unit) for the table; ratio = value / floor."""
    out: list[tuple[str, float | None, float | None, str]] = []
    pulls = results.get("pulls")
    if pulls:
        for kind, label in PULL_KINDS:
            floor = pulls[kind]["direct"]
            for key, name, _ in PULLS:
                if key in pulls[kind]:
                    out.append((f"{label}: {name}", pulls[kind][key], floor, "s"))
        mib = pulls["imageMiB"] * 1024 * 1024
        out.append(
            ("WAN bytes MSR sent for one cold pull", pulls["coldPullUpstreamBytes"] / 1e6, mib / 1e6, "MB")
        )
        for kind, label in PULL_KINDS:
            if "userWarm" in pulls[kind]:
                name = f"{label}: user's cache warm, against no cache"
                out.append((name, pulls[kind]["userWarm"], pulls[kind]["wan"], "s"))
        for kind, label in PULL_KINDS:
            warm = pulls.get("userPull", {}).get("warm", {}).get(kind)
            if warm:
                name = f"{label}: WAN's part of a warm one; {warm['wanRoundTrips']} RTTs expected"
                out.append((name, warm["measuredWanSeconds"], warm["expectedWanSeconds"], "s"))
    chained = results.get("chainedPulls")
    if chained:
        floor = pulls["api"]["direct"] if pulls else None
        for key, name in CHAIN_PULLS:
            out.append((f"API pull, chained site -> hub -> MSR: {name}", chained["api"][key], floor, "s"))
        mib = chained["imageMiB"] * 1024 * 1024
        for key, name in (("coldPullUpstreamBytes", "both cold"), ("parentWarmUpstreamBytes", "hub warm")):
            measure = f"WAN bytes MSR sent for a chained pull, {name}"
            out.append((measure, chained[key] / 1e6, mib / 1e6, "MB"))
    deploy = results.get("deploy")
    if deploy:
        out.append(
            (
                "deploy -> first verified TLS answer",
                deploy["secondsToServe"],
                deploy["bareServiceCreateSeconds"],
                "s",
            )
        )
        out.append(("bare docker service create (floor)", deploy["bareServiceCreateSeconds"], None, "s"))
    unavailable = results.get("unavailability")
    if unavailable:
        out.append(("unavailable during a certificate rotation", unavailable["rotationSeconds"], None, "s"))
        out.append(("unavailable after a task is killed", unavailable["restartOnFailureSeconds"], None, "s"))
    cost = results.get("programCost")
    if cost:
        floor = cost["importFloorSeconds"]
        out.append(("import pulumi + providers (floor)", floor, None, "s"))
        out.append(("program run, __main__.py (1 cache)", cost["mainProgram"]["seconds"], floor, "s"))
        for case in cost["cases"]:
            name = f"program run, {case['caches']} cache(s) in one program"
            out.append((name, case["seconds"], floor, "s"))
        for case in cost.get("sdkFloor", []):
            name = f"SDK floor, {case['caches']} cache(s), resources only"
            out.append((name, case["seconds"], floor, "s"))
    return out


WIDTH = 60
"""The measure column's width in the table."""


def table(results: dict[str, Any]) -> str:
    lines = [
        f"| {'measure':<{WIDTH}} | {'median':>9} | {'floor':>9} | {'ratio':>6} |",
        f"|{'-' * (WIDTH + 2)}|{'-' * 11}|{'-' * 11}|{'-' * 8}|",
    ]
    for name, value, floor, unit in rows(results):
        v = f"{value:.2f} {unit}" if value is not None else "-"
        f = f"{floor:.2f} {unit}" if floor is not None else ""
        r = f"{value / floor:.2f}" if value is not None and floor else ""
        lines.append(f"| {name:<{WIDTH}} | {v:>9} | {f:>9} | {r:>6} |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pulls = results["pulls"]
    fig, ax = plt.subplots(figsize=(11, 4.8))
    width = 0.38
    xs = range(len(PULLS))
    for offset, (kind, name) in zip((-width / 2, width / 2), PULL_KINDS, strict=True):
        # The API client has no cold pull from MSR through the cache: no bar there.
        values = [pulls[kind].get(key) for key, _, _ in PULLS]
        bars = ax.bar([x + offset for x in xs], [v or 0 for v in values], width, label=name)
        ax.bar_label(bars, labels=[f"{v:.1f} s" if v is not None else "" for v in values], fontsize=8)
    p = results["params"]
    ax.set_xticks(list(xs), [label for _, _, label in PULLS], fontsize=8)
    ax.set_ylabel("seconds (median)")
    ax.set_title(
        f"Pull of a {p['sizeMiB']} MiB incompressible image; WAN {p['rttMs']:g} ms RTT, {p['mbit']:g} Mbit/s"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--runs", type=int, default=int(os.environ.get("BENCH_RUNS", "3")))
    parser.add_argument("--size-mb", type=int, default=int(os.environ.get("BENCH_SIZE_MB", "100")))
    parser.add_argument("--rtt-ms", type=float, default=float(os.environ.get("BENCH_RTT_MS", "50")))
    parser.add_argument("--mbit", type=float, default=float(os.environ.get("BENCH_MBIT", "100")))
    parser.add_argument(
        "--json", default=os.environ.get("BENCH_JSON") or str(ROOT / "build/bench/bench.json")
    )
    parser.add_argument("--plot", default=None, help="PNG of the pull times (default: next to the JSON)")
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["pulls", "deploy", "unavailability", "chain", "program"],
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.size_mb < 1 or args.mbit <= 0 or args.rtt_ms < 0:
        parser.error("runs and size must be >= 1, mbit > 0, rtt >= 0")

    import docker

    from bench.measure import Bench, Params
    from rehearsal.localswarm import LocalSwarm, SwarmUnavailable

    if not os.environ.get("DOCKER_HOST"):
        say("bench: DOCKER_HOST is not set; run it through `make bench`, which starts the swarm")
        return 2
    try:
        swarm = LocalSwarm.from_env()
    except SwarmUnavailable as exc:
        say(f"bench: {exc}")
        return 2
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    png_path = Path(args.plot) if args.plot else plot_path(json_path)
    params = Params(runs=args.runs, size_mb=args.size_mb, rtt_ms=args.rtt_ms, mbit=args.mbit)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "topology": {
            "manager": f"{swarm.manager.hostname} {swarm.manager.address}",
            "cache": f"{swarm.cache.hostname} {swarm.cache.address}",
            "msr": f"{swarm.msr.hostname} {swarm.msr.address}",
            "wanLinks": f"this machine {swarm.host_address}: cache -> MSR, and the site's clients -> MSR",
        },
        "params": {
            "runs": params.runs,
            "sizeMiB": params.size_mb,
            "rttMs": params.rtt_ms,
            "mbit": params.mbit,
        },
    }
    wan = f"WAN {params.rtt_ms:g} ms / {params.mbit:g} Mbit/s"
    say(f"bench: {params.runs} run(s), {params.size_mb} MiB image, {wan}")
    say(
        f"bench: cache on {swarm.cache.hostname} ({swarm.cache.address}), MSR stand-in on "
        f"{swarm.msr.hostname} ({swarm.msr.address}), WAN links on this machine ({swarm.host_address})"
    )
    bench = Bench(docker.from_env(), swarm, params, ROOT / "build/bench", log=say)
    try:
        results["topology"]["engine"] = f"Docker {bench.client.version().get('Version')} (the manager's)"
        say("bench: deploying the dev stack's rehearsal")
        bench.deploy()
        if "deploy" not in args.skip:
            say("bench: deploy time")
            bench.measure_deploy()
        if "pulls" not in args.skip:
            say("bench: pulls")
            bench.measure_pulls()
        if "unavailability" not in args.skip:
            say("bench: unavailability")
            bench.measure_unavailability()
        if "chain" not in args.skip:
            # Last: it turns the rehearsal into two caches.
            say("bench: chained pulls")
            bench.measure_chained_pulls()
    finally:
        bench.close()
    results.update(bench.results)
    if "program" not in args.skip:
        from bench.program_cost import measure

        say("bench: program evaluation cost")
        results["programCost"] = measure(runs=params.runs)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    say("")
    say(table(results))
    say("")
    say(f"bench: JSON written to {json_path}")
    if "pulls" in results:
        plot(results, png_path)
        say(f"bench: plot written to {png_path}")
    return 0


def plot_path(json_path: Path) -> Path:
    """The plot beside the JSON: its name less a .json suffix, plus .png (a name
    like tmp.X keeps its dot: tmp.X.png, never tmp.png)."""
    return json_path.with_name(json_path.name.removesuffix(".json") + ".png")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
