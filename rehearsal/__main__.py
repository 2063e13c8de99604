"""`make rehearse` / `make rehearse-down`: a stack, rehearsed on the local swarm.

    python -m rehearsal up (--stack NAME | --stack-config FILE) [--report FILE] [--keep]
    python -m rehearsal down

`up` starts the upstream stand-in on the local swarm's msr node, applies the
stack's real program through the manager in DOCKER_HOST with the cache on the
cache node, waits for the cache to answer there, pulls a test image through
it, writes the report, and removes everything again unless --keep.
`down` removes a kept rehearsal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rehearsal.localswarm import LocalSwarm, SwarmUnavailable

ROOT = Path(__file__).resolve().parents[1]
# One kept rehearsal at a time; REHEARSAL_DIR lets the tests use their own.
STATE_DIR = Path(os.environ.get("REHEARSAL_DIR") or ROOT / "build/rehearsal")
STATE = STATE_DIR / "state.json"
TEST_REPO, TEST_TAG = "rehearsal/busybox", "latest"


def say(message: str) -> None:
    print(message, flush=True)


def client() -> tuple[Any, LocalSwarm]:
    """The manager's client, and the local swarm's nodes."""
    import docker

    if not os.environ.get("DOCKER_HOST"):
        raise SystemExit(
            "rehearse: DOCKER_HOST is not set; run it through `make rehearse`, which starts the swarm"
        )
    try:
        swarm = LocalSwarm.from_env()
    except SwarmUnavailable as exc:
        raise SystemExit(f"rehearse: {exc}") from None
    c = docker.from_env()
    info = c.info()["Swarm"]
    if info["LocalNodeState"] != "active" or not info["ControlAvailable"]:
        raise SystemExit(f"rehearse: {os.environ['DOCKER_HOST']} is not a Swarm manager")
    return c, swarm


def stack_file(args: argparse.Namespace) -> tuple[str, Path]:
    if args.stack_config:
        path = Path(args.stack_config)
        name = path.name.removeprefix("Pulumi.").removesuffix(".yaml").removesuffix(".yml")
    elif args.stack:
        name, path = args.stack, ROOT / "stacks" / f"Pulumi.{args.stack}.yaml"
    else:
        raise SystemExit(
            "rehearse: say which stack: STACK=<env> (stacks/Pulumi.<env>.yaml) or STACK_CONFIG=<file>"
        )
    if not path.is_file():
        known = ", ".join(sorted(p.name.split(".")[1] for p in (ROOT / "stacks").glob("Pulumi.*.yaml")))
        raise SystemExit(f"rehearse: no stack file {path} (stacks here: {known})")
    return name, path


def engine_pull(c: Any, address: tuple[str, int]) -> None:
    """What a Docker client on the site does: `docker pull` through the cache
    (here the manager's engine, pulling from the cache node's address)."""
    ref = f"{address[0]}:{address[1]}/{TEST_REPO}"
    image = c.images.pull(ref, tag=TEST_TAG)
    c.images.remove(image.id, force=True)


def up(args: argparse.Namespace) -> int:
    from rehearsal import upstream as up_
    from rehearsal.applier import Rehearsal
    from rehearsal.deploy import apply_and_serve
    from rehearsal.stack import StackFileError, read_stack
    from tools.smoke import smoke_check

    name, path = stack_file(args)
    # The stack file first, read as the Pulumi CLI reads it: a file `up` would
    # refuse is refused before anything is started.
    try:
        stack = read_stack(path)
    except StackFileError as exc:
        raise SystemExit(f"rehearse: {exc}") from None
    if STATE.exists():
        raise SystemExit(
            "rehearse: a kept rehearsal is still running; remove it first with `make rehearse-down`"
        )
    c, swarm = client()
    for tag in (swarm.upstream_image, swarm.stand_in_image):
        if not swarm.msr.client().images.list(name=tag):
            raise SystemExit(f"rehearse: test image {tag} is missing; rehearsal/images/build.sh builds it")
    workdir = STATE_DIR / name
    port = int(os.environ.get("UPSTREAM_PORT", "5900"))
    say(f"rehearse: stack {name} ({path.relative_to(ROOT) if path.is_relative_to(ROOT) else path})")
    say(f"rehearse: starting the upstream MSR stand-in on {swarm.msr.hostname} ({swarm.msr.address}:{port})")
    upstream = up_.start(swarm, workdir / "upstream", port)
    rehearsal = Rehearsal(c, name, log=lambda m: say(f"  {m}"))
    ok = False
    try:
        image = up_.sample_image()
        up_.push(upstream, TEST_REPO, TEST_TAG, image)
        say(f"rehearse: pushed {TEST_REPO}:{TEST_TAG} to the upstream")
        say("rehearse: applying the program to the swarm")
        deployed = apply_and_serve(rehearsal, stack, upstream, workdir, log=say, swarm=swarm)
        smoke = smoke_check(
            deployed.address, deployed.server_name, str(deployed.ca_file),
            expected_cert_pem=deployed.run.exports["certificatePem"], pull=(TEST_REPO, TEST_TAG),
        )  # fmt: skip
        pull_ok = smoke.pulled_digest == image.digest
        say(f"rehearse: the cache presents the stack's certificate ({smoke.certificate_sha256[:16]}...)")
        say(f"rehearse: pulled {TEST_REPO}:{TEST_TAG} through the cache over verified TLS: {pull_ok}")
        engine_pull(c, deployed.address)
        say("rehearse: `docker pull` through the cache: ok")
        exports = deployed.run.exports
        report = {
            "cacheUrl": exports["cacheUrl"],
            "address": f"{deployed.address[0]}:{deployed.address[1]}",
            "caFile": str(deployed.ca_file.resolve()),
            "dockerHost": os.environ["DOCKER_HOST"],
            "serviceName": exports["serviceName"],
            "node": deployed.node.hostname,
            "nodeAddress": deployed.node.address,
            "manager": swarm.manager.hostname,
            "label": exports["label"],
            "secondsToServe": deployed.seconds_to_serve,
            "pullOk": pull_ok,
        }
        if args.report:
            Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
            say(f"rehearse: report written to {args.report}")
        else:
            say(json.dumps(report, indent=2))
        ok = pull_ok
    except Exception as exc:
        say(f"rehearse: FAILED: {type(exc).__name__}: {exc}")
    finally:
        if args.keep and ok:
            rehearsal.save(STATE, upstreamPort=port)
            say("rehearse: kept running (KEEP=1); remove it with `make rehearse-down`")
        else:
            say("rehearse: removing the rehearsal")
            if not teardown(rehearsal, swarm, port):
                # What is left is in the state file: rehearse-down retries it.
                rehearsal.save(STATE, upstreamPort=port)
                say("rehearse: some of it could not be removed (above); `make rehearse-down` retries")
                ok = False
    return 0 if ok else 1


def teardown(rehearsal: Any, swarm: LocalSwarm, port: int | None) -> bool:
    """Remove everything, each step even when one before it failed; True when all went."""
    from rehearsal import upstream as up_
    from rehearsal.deploy import pulumi_volumes, remove_node_volumes

    done = True
    volumes = pulumi_volumes(rehearsal)
    for step, action in (
        ("the stack's resources", rehearsal.destroy),
        ("the cache node's volume", lambda: remove_node_volumes(swarm.cache, volumes, log=say)),
        ("the MSR stand-in", lambda: up_.stop(swarm, port)),
    ):
        try:
            action()
        except Exception as exc:
            say(f"rehearse: could not remove {step}: {type(exc).__name__}: {exc}")
            done = False
    return done


def down(_args: argparse.Namespace) -> int:
    from rehearsal.applier import Rehearsal

    if not STATE.exists():
        say("rehearse: no kept rehearsal to remove")
        return 0
    c, swarm = client()
    rehearsal, extra = Rehearsal.load(c, STATE, log=lambda m: say(f"  {m}"))
    say(f"rehearse: removing the kept rehearsal of stack {rehearsal.stack}")
    if not teardown(rehearsal, swarm, extra.get("upstreamPort")):
        rehearsal.save(STATE, **extra)
        say("rehearse: some of it could not be removed (above); run `make rehearse-down` again")
        return 1
    STATE.unlink()
    say("rehearse: removed")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="rehearse a stack on the local swarm")
    p_up.add_argument("--stack", help="stack name: stacks/Pulumi.<name>.yaml")
    p_up.add_argument("--stack-config", help="path of a stack file")
    p_up.add_argument("--report", help="write the JSON report here")
    p_up.add_argument("--keep", action="store_true", help="leave the rehearsal running")
    sub.add_parser("down", help="remove a kept rehearsal")
    args = parser.parse_args(argv)
    return up(args) if args.command == "up" else down(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
