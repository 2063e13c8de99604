"""`make rehearse` / `make rehearse-down`: a stack, rehearsed on the local swarm.

    python -m rehearsal check (--stack NAME | --stack-config FILE)
    python -m rehearsal up (--stack NAME | --stack-config FILE) [--report FILE] [--keep]
    python -m rehearsal down

`check` reads the stack file as the Pulumi CLI reads it and runs the program's
own validation on it as written, in well under a second and with nothing
started: a stack `pulumi up` would refuse is refused, every problem at once.
`make rehearse` runs it before it starts the swarm; `up` runs it again first.

`up` then says which values it swaps for stand-ins, starts the MSR stand-in on
the local swarm's msr node, applies the stack's real program through the
manager in DOCKER_HOST with the cache on the cache node, waits for the cache to
answer there, pulls a test image through it, writes the report, and removes
everything again unless --keep. What exists is written to the state file after
every change, so a failure, Ctrl-C (or SIGTERM), or even a kill at any point
leaves what `down` needs to remove it.
`down` removes a kept, failed or interrupted rehearsal.

Every message goes through one redaction (tools/redact.py): no private key, no
generated secret and no credential from a Docker error is printed.

Exit codes: 0 rehearsed (and removed, unless kept); 1 the rehearsal failed
(removed); 2 refused before anything was started; 130 interrupted (removed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from rehearsal.localswarm import LocalSwarm, SwarmUnavailable
from tools.redact import install_excepthook, redact

ROOT = Path(__file__).resolve().parents[1]
# One rehearsal at a time; REHEARSAL_DIR lets the tests use their own.
STATE_DIR = Path(os.environ.get("REHEARSAL_DIR") or ROOT / "build/rehearsal")
STATE = STATE_DIR / "state.json"
TEST_REPO, TEST_TAG = "rehearsal/busybox", "latest"
# Pulled from MSR as a user whose content cache is this one: new to the cache.
USER_REPO = "rehearsal/user-pull"
EXIT_OK, EXIT_FAILED, EXIT_REFUSED, EXIT_INTERRUPTED = 0, 1, 2, 130


def say(message: str) -> None:
    print(redact(message), flush=True)


def refuse(message: str) -> NoReturn:
    """Nothing was started: say why (on stderr) and exit 2."""
    print(redact(message), file=sys.stderr, flush=True)
    raise SystemExit(EXIT_REFUSED)


def client() -> tuple[Any, LocalSwarm]:
    """The manager's client, and the local swarm's nodes."""
    import docker

    if not os.environ.get("DOCKER_HOST"):
        refuse("rehearse: DOCKER_HOST is not set; run it through `make rehearse`, which starts the swarm")
    try:
        swarm = LocalSwarm.from_env()
    except SwarmUnavailable as exc:
        refuse(f"rehearse: {exc}")
    c = docker.from_env()
    info = c.info()["Swarm"]
    if info["LocalNodeState"] != "active" or not info["ControlAvailable"]:
        refuse(f"rehearse: {os.environ['DOCKER_HOST']} is not a Swarm manager")
    return c, swarm


# What the Pulumi CLI accepts as a stack name (and a Swarm object name can hold).
_STACK_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def stack_file(args: argparse.Namespace) -> tuple[str, Path]:
    """(stack name, stack file). With STACK_CONFIG the name is the file's, as the
    CLI names the stack of stacks/Pulumi.<name>.yaml: Pulumi.mistake.yaml is
    stack `mistake`."""
    if args.stack_config:
        path = Path(args.stack_config)
        name = path.name.removeprefix("Pulumi.").removesuffix(".yaml").removesuffix(".yml")
    elif args.stack:
        name, path = args.stack, ROOT / "stacks" / f"Pulumi.{args.stack}.yaml"
    else:
        refuse("rehearse: say which stack: STACK=<env> (stacks/Pulumi.<env>.yaml) or STACK_CONFIG=<file>")
    if not path.is_file():
        known = ", ".join(sorted(p.name.split(".")[1] for p in (ROOT / "stacks").glob("Pulumi.*.yaml")))
        refuse(f"rehearse: no stack file {path} (stacks here: {known})")
    if not name or len(name) > 100 or not set(name) <= _STACK_NAME_CHARS:
        refuse(
            f"rehearse: the stack name {name!r} (from the file name {path.name}) is not a stack name; "
            "expected Pulumi.<name>.yaml with a name of letters, digits, '-', '_' or '.'"
        )
    return name, path


def checked_stack(args: argparse.Namespace) -> tuple[str, Path, dict[str, Any]]:
    """The stack file read as the CLI reads it and checked as `pulumi up` checks
    it, before anything is started; refused (exit 2) with every problem."""
    from components.settings import SettingsError
    from tools.stack_file import StackFileError, problems, read_stack

    name, path = stack_file(args)
    try:
        values = read_stack(path)
    except StackFileError as exc:
        refuse(f"rehearse: {exc}")
    found = problems(values)
    if found:
        refuse(f"rehearse: {shown(path)} is refused, as `pulumi up` would refuse it.\n{SettingsError(found)}")
    return name, path, values


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def refuse_if_one_is_there() -> None:
    if STATE.exists():
        refuse(
            "rehearse: a kept, failed or interrupted rehearsal is still there; "
            "remove it first with `make rehearse-down`"
        )


# Where scripts/swarm.sh describes a swarm that is up (MSRC_SWARM when run through it).
SWARM_NODES = Path("/tmp/msrc-swarm/nodes.json")  # noqa: S108 - scripts/swarm.sh's fixed place
DEFAULT_NODES = 3


def swarm_size() -> tuple[int, bool]:
    """(how many nodes the local swarm has, whether it is up): read from its
    nodes.json when it is up, else the size `make rehearse` will start it
    with (NODES, default 3)."""
    path = Path(os.environ.get("MSRC_SWARM") or SWARM_NODES)
    try:
        return len(json.loads(path.read_text()).get("nodes") or []), True
    except (OSError, ValueError, AttributeError):
        pass
    try:
        return int(os.environ.get("NODES") or DEFAULT_NODES), False
    except ValueError:
        return DEFAULT_NODES, False


def more_nodes_hint(needed: int, up: bool, have: int) -> str:
    """How to give the rehearsal `needed` nodes for caches (plus the msr node)."""
    total = needed + 1
    if up:
        missing = range(have + 1, total + 1)
        adds = " && ".join(f"scripts/swarm.sh node-add msrc-node{i}" for i in missing)
        return (
            f"add nodes to the running swarm ({adds}), "
            f"or `make swarm-down` and `make rehearse ... NODES={total}`"
        )
    return f"run it as `make rehearse ... NODES={total}`, which starts a swarm of {total} nodes"


def refuse_if_too_few_nodes(values: dict[str, Any]) -> None:
    """Before anything is started: the caches need more nodes than the swarm
    has (or will have) for them, the msr node aside."""
    from rehearsal.stack import Unrehearsable, nodes_needed, refuse_unreadable

    try:
        refuse_unreadable(values)
    except Unrehearsable as exc:
        refuse(f"rehearse: {exc}")
    needed = nodes_needed(values)
    have, up = swarm_size()
    if needed > max(have - 1, 0):
        state = "has" if up else "will start with"
        refuse(
            f"rehearse: the stack's caches need {needed} nodes of the local swarm (one per task, and caches "
            "publishing the same port on nodes of their own), besides the msr node that runs the MSR "
            "stand-in; "
            f"the local swarm {state} {have} nodes in all: {more_nodes_hint(needed, up, have)}"
        )


def check(args: argparse.Namespace) -> int:
    _name, path, values = checked_stack(args)
    if args.for_up:
        refuse_if_one_is_there()
        refuse_if_too_few_nodes(values)
    say(f"rehearse: {shown(path)}: read as the Pulumi CLI reads it, and no problem `pulumi up` would refuse")
    return EXIT_OK


def engine_pull(c: Any, address: tuple[str, int]) -> None:
    """What a Docker client on the site does: `docker pull` through the cache
    (here the manager's engine, pulling from the cache node's address)."""
    ref = f"{address[0]}:{address[1]}/{TEST_REPO}"
    image = c.images.pull(ref, tag=TEST_TAG)
    c.images.remove(image.id, force=True)


def up(args: argparse.Namespace) -> int:
    # Checked before the heavy imports (the Pulumi SDK, Docker): a mistake is
    # refused in well under a second.
    name, path, stack = checked_stack(args)
    refuse_if_one_is_there()

    from rehearsal import object_store
    from rehearsal import upstream as up_
    from rehearsal.applier import Rehearsal
    from rehearsal.deploy import apply_and_serve, cache_nodes
    from rehearsal.stack import (
        NotEnoughNodes,
        Unrehearsable,
        needs_object_store,
        place_caches,
        refuse_unreadable,
    )

    c, swarm = client()
    for tag in (swarm.upstream_image, swarm.stand_in_image):
        if not swarm.msr.client().images.list(name=tag):
            refuse(f"rehearse: test image {tag} is missing; rehearsal/images/build.sh builds it")
    try:
        refuse_unreadable(stack)
        place_caches(stack, cache_nodes(swarm))
    except NotEnoughNodes as exc:
        hint = more_nodes_hint(exc.needed, True, len(swarm.nodes))
        refuse(f"rehearse: {exc}: {hint}")
    except Unrehearsable as exc:
        refuse(f"rehearse: {exc}")
    workdir = STATE_DIR / name
    port = int(os.environ.get("UPSTREAM_PORT", "5900"))
    store_port = int(os.environ.get("OBJECT_STORE_PORT", str(object_store.DEFAULT_PORT)))
    facts: dict[str, Any] = {"upstreamPort": port, "workdir": str(workdir)}
    if needs_object_store(stack):
        facts["objectStorePort"] = store_port
    # The state file exists before anything is started and follows every
    # change, so `make rehearse-down` can finish whatever this run leaves.
    rehearsal = Rehearsal(c, name, log=lambda m: say(f"  {m}"), state_file=STATE, **facts)
    rehearsal.save(STATE, **rehearsal.extra)
    status = EXIT_FAILED
    try:
        with _interrupts_raised(rehearsal):
            say(f"rehearse: stack {name} ({shown(path)}): checked as written, no problem")
            where = f"{swarm.msr.hostname} ({swarm.msr.address}:{port})"
            say(f"rehearse: starting the upstream MSR stand-in on {where}")
            upstream = up_.start(swarm, workdir / "upstream", port)
            image = up_.sample_image()
            up_.push(upstream, TEST_REPO, TEST_TAG, image)
            say(f"rehearse: pushed {TEST_REPO}:{TEST_TAG} to the upstream")
            store = None
            if "objectStorePort" in facts:
                say(
                    f"rehearse: starting the S3 stand-in (moto) on {swarm.msr.hostname} "
                    f"({swarm.msr.address}:{store_port})"
                )
                store = object_store.start(swarm, workdir / "object-store", store_port)
            say("rehearse: applying the program to the swarm, with these stand-ins:")
            deployed = apply_and_serve(rehearsal, stack, upstream, workdir, log=say, swarm=swarm, store=store)
            results = {
                key: check_cache(c, cache, deployed, image, upstream, swarm)
                for key, cache in deployed.caches.items()
            }
            report(args, deployed, swarm, upstream, results, store)
            ok = all(r["pullOk"] and r["redirectedPullOk"] for r in results.values())
            status = EXIT_OK if ok else EXIT_FAILED
    except KeyboardInterrupt:
        say("rehearse: interrupted")
        status = EXIT_INTERRUPTED
    except Unrehearsable as exc:
        say(f"rehearse: FAILED: {exc}")
    except Exception as exc:
        say(f"rehearse: FAILED: {type(exc).__name__}: {exc}")
    if args.keep and status == EXIT_OK:
        say("rehearse: kept running (KEEP=1); remove it with `make rehearse-down`")
        return status
    say("rehearse: removing the rehearsal")
    if not finish(rehearsal, swarm, port, workdir, store_port=facts.get("objectStorePort")):
        say("rehearse: some of it could not be removed (above); `make rehearse-down` retries")
        return EXIT_FAILED if status == EXIT_OK else status
    return status


def check_cache(
    c: Any, cache: Any, deployed: Any, image: Any, upstream: Any, swarm: LocalSwarm
) -> dict[str, Any]:
    """One cache, as the site and MSR users meet it: the certificate, a pull
    through it (verifying, and `docker pull`) on every node it runs on, and a
    user's pull from MSR redirected to it. Returns pullOk and redirectedPullOk."""
    from tools.smoke import smoke_check

    listed = deployed.settings.listed
    named = f"{cache.key}: " if listed else ""
    pull_ok = True
    for address in cache.addresses:
        if listed:
            expected: dict[str, Any] = {"expected_sha256": cache.exports["certificateSha256"]}
        else:
            expected = {"expected_cert_pem": deployed.run.exports["certificatePem"]}
        smoke = smoke_check(
            address, cache.server_name, str(cache.ca_file), pull=(TEST_REPO, TEST_TAG), **expected
        )
        ok = smoke.pulled_digest == image.digest
        pull_ok = pull_ok and ok
        at = f" at {address[0]}:{address[1]}" if len(cache.addresses) > 1 else ""
        say(
            f"rehearse: {named}the cache{at} presents the stack's certificate "
            f"({smoke.certificate_sha256[:16]}...)"
        )
        say(f"rehearse: {named}pulled {TEST_REPO}:{TEST_TAG} through the cache{at} over verified TLS: {ok}")
        engine_pull(c, address)
        say(f"rehearse: {named}`docker pull` through the cache{at}: ok")
    repo = f"{USER_REPO}-{cache.key}" if listed else USER_REPO
    redirected_ok = as_msr_users_pull(upstream, cache, swarm, repo, named)
    return {"pullOk": pull_ok, "redirectedPullOk": redirected_ok}


def as_msr_users_pull(
    upstream: Any, cache: Any, swarm: LocalSwarm, repo: str = USER_REPO, named: str = ""
) -> bool:
    """The cache as MSR users meet it: registered with MSR, chosen by a user,
    who pulls from MSR and gets every layer from the cache, and on a warm pull
    MSR serves no layer bytes at all (its access log)."""
    from rehearsal import upstream as up_
    from rehearsal.user_pull import cache_client, pull_as_user

    cache_url, registration_id = cache.exports["cacheUrl"], cache.exports["registrationId"]
    registered = {r["id"]: r for r in upstream.registrations()}
    entry = registered.get(registration_id)
    if entry is None or entry["host"] != cache_url:
        say(
            f"rehearse: {named}MSR does not list the registration {registration_id} for {cache_url}: "
            f"{registered}"
        )
        return False
    say(f"rehearse: {named}registered with MSR as {entry['name']!r} (id {registration_id}) for {cache_url}")
    upstream.set_user_cache(upstream.test_user, registration_id)
    say(f"rehearse: {named}MSR user {upstream.test_user} chose that cache (the stand-in's control)")
    image = up_.sample_image()
    up_.push(upstream, repo, TEST_TAG, image)
    msr = upstream.registry(as_user=upstream.test_user)
    cache_for = cache_client(cache_url, cache.address, str(cache.ca_file))
    cold = pull_as_user(msr, repo, TEST_TAG, cache_for)
    upstream.wait_quiet()  # the cache has stored what it fetched
    before = upstream.blob_bytes_served(cold.blobs)
    warm = pull_as_user(msr, repo, TEST_TAG, cache_for)
    msr_bytes = upstream.blob_bytes_served(warm.blobs) - before
    ok = cold.digest == warm.digest == image.digest and not cold.from_msr and not warm.from_msr
    ok = ok and msr_bytes == 0
    say(
        f"rehearse: {named}{upstream.test_user} pulled {repo}:{TEST_TAG} from MSR: "
        f"{len(warm.from_cache)}/{len(warm.blobs)} layers redirected to the cache, "
        f"{msr_bytes} layer bytes from MSR on the warm pull: {ok}"
    )
    return ok and docker_pull_from_msr(upstream, cache.node, cache_url, image.blobs, repo, named)


def docker_pull_from_msr(
    upstream: Any, node: Any, cache_url: str, blobs: Any, repo: str = USER_REPO, named: str = ""
) -> bool:
    """`docker pull <msr>/<repo>:<tag>` as the user, by the engine of the cache's
    node (a site client next to the cache), which follows MSR's redirects to
    cacheUrl: only when cacheHost resolves there (localhost, an IP, a name in
    /etc/hosts), as it must for real clients."""
    import socket
    from urllib.parse import urlsplit

    host = urlsplit(cache_url).hostname or ""
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        say(
            f"rehearse: {named}`docker pull` from MSR skipped: cacheHost {host} does not resolve "
            "on this machine"
        )
        return True
    before = upstream.blob_bytes_served(blobs)
    engine = node.client()
    ref = f"{upstream.host}:{upstream.port}/{repo}"
    auth = {"username": upstream.test_user, "password": upstream.test_password}
    pulled = engine.images.pull(ref, tag=TEST_TAG, auth_config=auth)
    engine.images.remove(pulled.id, force=True)
    msr_bytes = upstream.blob_bytes_served(blobs) - before
    say(
        f"rehearse: {named}`docker pull {ref}:{TEST_TAG}` as {upstream.test_user}: "
        f"{msr_bytes} layer bytes from MSR"
    )
    return msr_bytes == 0


def report(
    args: argparse.Namespace,
    deployed: Any,
    swarm: LocalSwarm,
    upstream: Any,
    results: dict[str, dict[str, Any]],
    store: Any = None,
) -> None:
    """The JSON report: `caches`, one entry per cache; with one cache, its
    values at the top level too, as before stacks had several."""
    caches = {}
    for key, cache in deployed.caches.items():
        caches[key] = {
            "cacheUrl": cache.cache_url,
            "address": f"{cache.address[0]}:{cache.address[1]}",
            "addresses": [f"{a}:{p}" for a, p in cache.addresses],
            "caFile": str(cache.ca_file.resolve()),
            "serviceName": cache.exports["serviceName"],
            "node": cache.node.hostname,
            "nodes": [n.hostname for n in cache.nodes],
            "nodeAddress": cache.node.address,
            "label": cache.exports["label"],
            "upstream": cache.exports["upstream"],
            "secondsToServe": cache.seconds_to_serve,
            "pullOk": results[key]["pullOk"],
            "registrationId": cache.exports["registrationId"],
            "redirectedPullOk": results[key]["redirectedPullOk"],
        }
    doc: dict[str, Any]
    if not deployed.settings.listed:
        ((key, one),) = caches.items()
        doc = {
            "cacheUrl": one["cacheUrl"],
            "address": one["address"],
            "caFile": one["caFile"],
            "dockerHost": os.environ["DOCKER_HOST"],
            "serviceName": one["serviceName"],
            "node": one["node"],
            "nodeAddress": one["nodeAddress"],
            "manager": swarm.manager.hostname,
            "label": one["label"],
            "secondsToServe": one["secondsToServe"],
            "pullOk": one["pullOk"],
            "msrApi": f"{upstream.url}/api/v0/content_caches",
            "registrationId": one["registrationId"],
            "redirectedPullOk": one["redirectedPullOk"],
        }
    else:
        doc = {
            "dockerHost": os.environ["DOCKER_HOST"],
            "manager": swarm.manager.hostname,
            "msrApi": f"{upstream.url}/api/v0/content_caches",
            "secondsToServe": deployed.seconds_to_serve,
            "pullOk": all(r["pullOk"] for r in results.values()),
            "redirectedPullOk": all(r["redirectedPullOk"] for r in results.values()),
        }
    if store is not None:
        doc["objectStore"] = f"{store.endpoint}/{store.bucket}"
    doc["caches"] = caches
    if args.report:
        Path(args.report).write_text(json.dumps(doc, indent=2) + "\n")
        say(f"rehearse: report written to {args.report}")
    else:
        say(json.dumps(doc, indent=2))


class _AfterInterrupt(logging.Filter):
    """Ctrl-C lands wherever the run is, often inside the Pulumi SDK's event
    loop; asyncio then logs the loop it could not finish as a traceback. After
    an interrupt that is noise: the run says "interrupted" and tears down."""

    interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.interrupted


@contextlib.contextmanager
def _interrupts_raised(rehearsal: Any) -> Iterator[None]:
    """Ctrl-C, and SIGTERM (a CI job cancelled, `timeout`) like it, end the run
    with KeyboardInterrupt, which `up` turns into a teardown: at once, or, while
    the program is being applied, once the apply has stopped (Rehearsal.interrupt)."""
    quiet = _AfterInterrupt()

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        quiet.interrupted = True
        if rehearsal.interrupt():
            raise KeyboardInterrupt

    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addFilter(quiet)
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Tear-down is not cut short by a second Ctrl-C or a SIGTERM: half a
    tear-down is what leaves debris."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def finish(
    rehearsal: Any, swarm: LocalSwarm, port: int | None, workdir: Path | None, store_port: int | None = None
) -> bool:
    """Remove everything; the state file and the work folder go only when all did
    (what is left stays in the state file, for `make rehearse-down`)."""
    with _uninterrupted():
        if not teardown(rehearsal, swarm, port, store_port):
            return False
        STATE.unlink(missing_ok=True)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        return True


def teardown(rehearsal: Any, swarm: LocalSwarm, port: int | None, store_port: int | None = None) -> bool:
    """Remove everything, each step even when one before it failed; True when all went."""
    from rehearsal import object_store
    from rehearsal import upstream as up_
    from rehearsal.deploy import pulumi_volumes, remove_labelled, remove_volumes_everywhere

    done = True
    volumes = pulumi_volumes(rehearsal)
    steps: list[tuple[str, Any]] = [
        ("the stack's resources", rehearsal.destroy),
        (
            "what else carries the stack's label",
            lambda: remove_labelled(rehearsal.ctx.client, rehearsal.stack, say),
        ),
        ("the caches' nodes' volumes", lambda: remove_volumes_everywhere(swarm, volumes, log=say)),
        ("the MSR stand-in", lambda: up_.stop(swarm, port)),
    ]
    if store_port is not None:
        steps.append(("the S3 stand-in", lambda: object_store.stop(store_port)))
    for step, action in steps:
        try:
            action()
        except Exception as exc:
            say(f"rehearse: could not remove {step}: {type(exc).__name__}: {exc}")
            done = False
    return done


def _registration_credentials(rehearsal: Any, stand_in_dir: Path) -> None:
    """The state file holds no secret, so a registration's token is not in it;
    removing it from the MSR stand-in takes the stand-in's admin password, which
    the stand-in's own config holds. With the stand-in gone, so is the
    registration: it is dropped from the state."""
    from rehearsal import upstream as up_

    admin = up_.admin_of(stand_in_dir)
    kept = []
    for r in rehearsal.state.resources:
        if r.typ.endswith(":Registration") and "token" not in r.created.outputs:
            if admin is None:
                say(f"rehearse: the MSR stand-in is gone, and registration {r.created.id} with it")
                continue
            r.created.outputs |= {"user": admin[0], "token": admin[1]}
            r.created.secret_outputs.add("token")
        kept.append(r)
    rehearsal.state.resources = kept


def down(_args: argparse.Namespace) -> int:
    from rehearsal.applier import Rehearsal

    if not STATE.exists():
        say("rehearse: no kept rehearsal to remove")
        return EXIT_OK
    c, swarm = client()
    rehearsal, extra = Rehearsal.load(c, STATE, log=lambda m: say(f"  {m}"))
    rehearsal.state_file, rehearsal.extra = STATE, extra
    if extra.get("workdir"):
        _registration_credentials(rehearsal, Path(extra["workdir"]) / "upstream")
    say(f"rehearse: removing the rehearsal of stack {rehearsal.stack}")
    workdir = extra.get("workdir")
    store_port = extra.get("objectStorePort")
    if not finish(
        rehearsal, swarm, extra.get("upstreamPort"), Path(workdir) if workdir else None, store_port=store_port
    ):
        say("rehearse: some of it could not be removed (above); run `make rehearse-down` again")
        return EXIT_FAILED
    say("rehearse: removed")
    return EXIT_OK


def main(argv: list[str]) -> int:
    install_excepthook()
    parser = argparse.ArgumentParser(prog="python -m rehearsal")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, text in (("check", "check a stack file as `pulumi up` would"), ("up", "rehearse a stack")):
        p = sub.add_parser(command, help=text)
        p.add_argument("--stack", help="stack name: stacks/Pulumi.<name>.yaml")
        p.add_argument("--stack-config", help="path of a stack file (the stack is named after it)")
        if command == "check":
            p.add_argument("--for-up", action="store_true", help="also refuse while a rehearsal is there")
        if command == "up":
            p.add_argument("--report", help="write the JSON report here")
            p.add_argument("--keep", action="store_true", help="leave the rehearsal running")
    sub.add_parser("down", help="remove a kept, failed or interrupted rehearsal")
    args = parser.parse_args(argv)
    return {"check": check, "up": up, "down": down}[args.command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
