"""Apply the real __main__.py to a real Docker Swarm, without the Pulumi engine.

The program runs under `pulumi.runtime.set_mocks`; each resource it registers
is created for real by its handler (rehearsal/resources.py), and the real
ids and outputs flow back into the program, so later resources see them as
they would under `pulumi up`. A second `apply` with the same `Rehearsal` acts
like a second `pulumi up` on the same state:

- inputs unchanged: nothing happens, the recorded outputs are returned;
- a change the handler can make in place (a service): updated in place;
- otherwise replaced: created anew first and the old one deleted once the
  whole program has run (Pulumi's default), or deleted first when the program
  asked for delete_before_replace;
- resources no longer registered are deleted at the end.

`destroy` deletes in reverse dependency order, as `pulumi destroy` would.
This is test machinery: it covers the resource types and inputs this program
uses, and refuses anything else rather than drop it.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from rehearsal.engine import (
    RecordingMocks,
    Registered,
    Run,
    goal_inputs,
    is_secret_wrapper,
    run_program,
    secret,
    unchanged,
    unwrap,
)
from rehearsal.resources import Context, Created, CreatedButFailed, handler_for
from tools.redact import REDACT


@dataclass
class Applied:
    """One resource as it exists on the swarm (the rehearsal's state entry)."""

    typ: str
    name: str
    inputs: dict[str, Any] = field(repr=False)
    """Plain inputs it was last applied with (kept in memory only; secrets
    included, so never shown in a repr or an assertion message)."""
    created: Created
    trigger: Any = None
    """The replacement_trigger it was made with; a new value replaces it."""
    retain: bool = False
    """retain_on_delete: a delete drops it from the state and leaves it on the swarm."""


@dataclass
class State:
    """Resources in an order that deletes safely when reversed."""

    resources: list[Applied] = field(default_factory=list)

    def get(self, name: str) -> Applied | None:
        return next((r for r in self.resources if r.name == name), None)

    def to_json(self) -> list[dict[str, Any]]:
        """What tear-down needs, and no secret: secret outputs are left out."""
        return [
            {
                "typ": r.typ,
                "name": r.name,
                "id": r.created.id,
                "outputs": {k: v for k, v in r.created.outputs.items() if k not in r.created.secret_outputs},
                "retain": r.retain,
            }
            for r in self.resources
        ]

    @classmethod
    def from_json(cls, items: list[dict[str, Any]]) -> State:
        return cls(
            [
                Applied(
                    i["typ"], i["name"], {}, Created(i["id"], i["outputs"]), retain=i.get("retain", False)
                )
                for i in items
            ]
        )


class _ReportedErrors(logging.Filter):
    """Drops asyncio's "Future exception was never retrieved" for an error that
    `Rehearsal.apply` already raised: the SDK hands the failed resource's error
    to the futures of everything that depended on it, and each of those would
    print the same traceback again when collected."""

    def __init__(self) -> None:
        super().__init__()
        # Exceptions take no weak references; the last few are enough.
        self.errors: collections.deque[BaseException] = collections.deque(maxlen=32)

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return exc is None or not any(exc is e for e in self.errors)


_REPORTED = _ReportedErrors()
logging.getLogger("asyncio").addFilter(_REPORTED)


class ApplyMocks(RecordingMocks):
    """Mocks whose answers are real resources."""

    def __init__(self, ctx: Context, prior: State, on_change: Callable[[State], None] | None = None) -> None:
        super().__init__()
        self.ctx = ctx
        self.prior = prior
        self.on_change = on_change
        self.seen: list[Applied] = []
        self.replaced: list[Applied] = []
        # The SDK registers from several threads; one at a time keeps the
        # order of creation (and so of deletion) the order of dependencies.
        self.lock = threading.Lock()
        # Like `pulumi up`, start nothing new once a resource has failed.
        self.failure: str | None = None
        self.error: BaseException | None = None
        self.refused: list[str] = []
        """Registrations not applied because an earlier resource failed."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        if not args.custom:
            # A component: only a grouping in the state, nothing to create.
            self.resources.append(Registered(args.typ, args.name, dict(args.inputs), dict(args.inputs)))
            return None, dict(args.inputs)
        with self.lock:
            if self.failure is None and self.ctx.stop.is_set():
                # Interrupted: like `pulumi up` after Ctrl-C, start nothing new.
                self.failure = "an interrupt"
            if self.failure is not None:
                # Like `pulumi up`, create nothing more once a resource has failed.
                # The run fails with that first error; an exception here as well
                # would only end in "Future exception was never retrieved" noise.
                self.refused.append(args.name)
                return f"not-applied-{args.name}", dict(args.inputs)
            try:
                # An input the program made secret stays secret as an output (a
                # dynamic provider returns its inputs: the registration's token):
                # never in the state file, a repr or a message.
                secrets = {k for k, v in args.inputs.items() if is_secret_wrapper(v)}
                created = self._apply(args.typ, args.name, unwrap(args.inputs), secrets)
            except BaseException as exc:
                self.failure, self.error = args.name, exc
                raise
        state: dict[str, Any] = dict(args.inputs)
        for key, value in created.outputs.items():
            if key in created.secret_outputs:
                # Whatever the tools print from now on cannot show it.
                REDACT.add(value)
            state[key] = secret(value) if key in created.secret_outputs else value
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs), state))
        return created.id, state

    def _apply(self, typ: str, name: str, inputs: dict[str, Any], secrets: set[str]) -> Created:
        handler = handler_for(typ)
        old = self.prior.get(name)
        trigger = self.replacement_triggers.get(name)
        retain = self.retain_on_delete.get(name, False)
        if old is not None and old.typ == typ:
            inputs = goal_inputs(old.inputs, inputs, self.ignore_changes.get(name, []))
            # A certificate in its renewal window is replaced whatever the inputs.
            due = getattr(handler, "due", None)
            renew = due is not None and due(old.created, inputs)
            if unchanged(old.inputs, old.trigger, inputs, trigger, renew):
                old.retain = retain  # an option, not an input: it changes in place
                self.seen.append(old)
                return old.created
            # A changed replacement_trigger replaces, whatever the inputs.
            changed = (
                handler.update(self.ctx, old.created, old.inputs, inputs) if old.trigger == trigger else None
            )
            if changed is not None:
                changed.secret_outputs |= secrets & changed.outputs.keys()
                self.ctx.log(f"updated {typ.split(':')[-1]} {name} in place")
                self.seen.append(Applied(typ, name, inputs, changed, trigger, retain))
                self._changed()
                return changed
            if self.delete_before_replace.get(name):
                self.ctx.log(f"replacing {name}: deleting the old one first")
                handler.delete(self.ctx, old.created)
            else:
                self.replaced.append(old)
        try:
            made = handler.create(self.ctx, name, inputs)
        except CreatedButFailed as exc:
            exc.created.secret_outputs |= secrets & exc.created.outputs.keys()
            made_name = exc.created.outputs.get("name", exc.created.id)
            self.seen.append(Applied(typ, name, inputs, exc.created, trigger, retain))
            self._changed()
            self.ctx.log(f"created {typ.split(':')[-1]} {name} ({made_name}), but it failed")
            raise
        made.secret_outputs |= secrets & made.outputs.keys()
        # In the state file before it is said: a run killed after the line can
        # be removed from the file.
        self.seen.append(Applied(typ, name, inputs, made, trigger, retain))
        self._changed()
        self.ctx.log(f"created {typ.split(':')[-1]} {name} ({made.outputs.get('name', made.id)})")
        return made

    def _changed(self) -> None:
        """Tell the owner what exists now, so that a run killed at any point
        leaves a state file that tear-down can finish from."""
        if self.on_change is not None:
            self.on_change(self.state_after()[0])

    def state_after(self) -> tuple[State, list[Applied]]:
        """(the new state, the old resources to delete now)."""
        seen = {a.name for a in self.seen}
        gone = [r for r in self.prior.resources if r.name not in seen]
        return State(self.replaced + self.seen + gone), self.replaced + gone


def _delete(ctx: Context, doomed: list[Applied]) -> None:
    for r in reversed(doomed):
        if r.retain:
            ctx.log(
                f"retained {r.typ.split(':')[-1]} {r.name} ({r.created.outputs.get('name', r.created.id)})"
            )
            continue
        handler_for(r.typ).delete(ctx, r.created)
        if r.typ.startswith("docker:") or r.typ.startswith("pulumi-python:dynamic"):
            ctx.log(
                f"deleted {r.typ.split(':')[-1]} {r.name} ({r.created.outputs.get('name', r.created.id)})"
            )


class Rehearsal:
    """One stack's resources on the swarm, across applies, until destroy."""

    def __init__(
        self,
        client: Any,
        stack: str,
        log: Callable[[str], None] = print,
        state_file: Path | None = None,
        **extra: Any,
    ) -> None:
        """`state_file`: where what exists is written after every change (and
        `extra` facts with it), so `make rehearse-down` can remove a rehearsal
        that was killed half-way."""
        self.ctx = Context(client, log)
        self.stack = stack
        self.state = State()
        self.applying = False
        """True while `apply` runs the program (see `interrupt`)."""
        self.state_file = state_file
        self.extra = extra

    def _persist(self, state: State) -> None:
        if self.state_file is not None:
            self._write(self.state_file, state, self.extra)

    def apply(self, config: dict[str, Any], secret_keys: tuple[str, ...] = ()) -> Run:
        """Run the program against the current state; returns what it registered
        and exported. Interrupted (`interrupt`), it raises KeyboardInterrupt once
        the program has run, with what was made in the state."""
        self.applying = True
        try:
            run = self._apply(config, secret_keys)
        finally:
            self.applying = False
        if self.ctx.stop.is_set():
            # Interrupted after the run's last registration: what it made is in the state.
            raise KeyboardInterrupt
        return run

    def interrupt(self) -> bool:
        """Ctrl-C or SIGTERM, taken as `pulumi up` takes it: nothing new is
        started and a wait for a resource gives up; `apply` then ends with
        KeyboardInterrupt. True when no apply is running, so the caller may
        raise KeyboardInterrupt at once: raised inside the program's run, it
        would leave Pulumi's runtime waiting for its RPCs for ever."""
        self.ctx.stop.set()
        return not self.applying

    def _apply(self, config: dict[str, Any], secret_keys: tuple[str, ...]) -> Run:
        mocks = ApplyMocks(self.ctx, self.state, self._persist)
        try:
            run = run_program(config, secret_keys=secret_keys, stack=self.stack, base={}, mocks=mocks)
        except BaseException:
            self._keep(mocks)
            if self.ctx.stop.is_set():
                raise KeyboardInterrupt from None
            if mocks.error is not None:
                # The resource that failed, not one refused after it.
                _REPORTED.errors.append(mocks.error)
                raise mocks.error from None
            raise
        if self.ctx.stop.is_set():
            self._keep(mocks)
            raise KeyboardInterrupt
        self.state, doomed = mocks.state_after()
        _delete(self.ctx, doomed)
        self.state = State([r for r in self.state.resources if r not in doomed])
        self._persist(self.state)
        return run

    def _keep(self, mocks: ApplyMocks) -> None:
        """After a failed or interrupted run: keep everything that exists (new,
        updated, replaced, not reached) so destroy can remove it; nothing is
        deleted. The lock waits for a registration still in progress in
        another thread."""
        with mocks.lock:
            mocks.failure = mocks.failure or "the program"
            self.state = mocks.state_after()[0]
        self._persist(self.state)

    def refresh(self) -> list[str]:
        """`pulumi refresh`: each resource whose provider can read it is read
        again (the dynamic providers); one that is gone leaves the state, so the
        next apply makes it again. Returns the names of those gone."""
        gone, kept = [], []
        for r in self.state.resources:
            read = getattr(handler_for(r.typ), "read", None)
            found = read(self.ctx, r.created) if read is not None else r.created
            if found is None:
                self.ctx.log(f"refresh: {r.typ.split(':')[-1]} {r.name} is gone")
                gone.append(r.name)
                continue
            r.created = found
            kept.append(r)
        self.state = State(kept)
        self._persist(self.state)
        return gone

    def destroy(self) -> None:
        """Delete everything, last created first."""
        remaining = list(self.state.resources)
        try:
            while remaining:
                _delete(self.ctx, [remaining[-1]])
                remaining.pop()
                self._persist(State(remaining))
        finally:
            self.state = State(remaining)

    def save(self, path: Path, **extra: Any) -> None:
        """Write what tear-down needs (no secret) and `extra` facts for the caller."""
        self._write(path, self.state, extra)

    def _write(self, path: Path, state: State, extra: dict[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"stack": self.stack, "resources": state.to_json(), "extra": extra}
        # Whole or not at all: a kill while writing must not leave half a file.
        partial = path.with_suffix(".partial")
        partial.touch(mode=0o600)
        partial.write_text(json.dumps(doc, indent=2))
        partial.replace(path)

    @classmethod
    def load(
        cls, client: Any, path: Path, log: Callable[[str], None] = print
    ) -> tuple[Rehearsal, dict[str, Any]]:
        doc = json.loads(path.read_text())
        rehearsal = cls(client, doc["stack"], log)
        rehearsal.state = State.from_json(doc["resources"])
        return rehearsal, doc.get("extra") or {}
