"""The cache's registration with MSR, as a Pulumi resource.

The docs' next step after deploying a cache: register it with MSR, so that
users can pick it and MSR redirects their layer downloads to it.

    POST   /api/v0/content_caches        {"name": ..., "host": <cacheUrl>}
    GET    /api/v0/content_caches        a list; each entry has an id
    DELETE /api/v0/content_caches/{id}

(admin credentials, HTTP basic auth). `RegistrationProvider` is a Python
dynamic provider on `requests`:
- create adopts a registration with the same name and host (a cache
  registered by hand before the stack), refuses one with the same name and
  another host (naming msr-cache:cacheName), and otherwise POSTs;
- read finds the registration by id (or name), so `pulumi refresh` sees one
  deleted or changed in MSR, and `up` then puts it back;
- a new name, host (cacheUrl) or MSR is a new registration: replaced, the old
  one deleted first (MSR refuses a second cache of the same name); new
  credentials or CA are updated in the state only;
- delete removes it; one already gone is fine.

What MSR's docs do not say, and how this copes with both answers:
- the body of a POST answer: the id is taken from it when it is a JSON object
  with an `id`; otherwise the list is read again and the entry found by name;
- the form of the list: a JSON list, or an object holding one list;
- update in place (PATCH/PUT): not used; a changed host is a replacement.

The credentials are an input marked secret and a secret output (delete needs
them); no message quotes them, and `requests` puts basic auth in a header it
never shows in an exception.

Pulumi serializes the provider into the state and runs it in another process
that cannot import this project, so it is self-contained: `requests` is
imported in its methods and its helpers are static methods. It is serialized
once per process (components/by_value.py), not once per registration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi.dynamic as dyn

from components.by_value import ByValueResource, pickle_by_value

API_PATH = "/api/v0/content_caches"
# Inputs whose change makes another registration.
IDENTITY = ("api", "name", "host")
TIMEOUT_SECONDS = 20


class RegistrationError(Exception):
    """MSR refused or could not be reached; the message names the key to fix."""


class RegistrationProvider(dyn.ResourceProvider):
    """Inputs: api (https://<msrHost>:<msrPort>), ca_pem (MSR's CA, "" for the
    system's trust), user, token (secret), name, host (the cache's URL).
    Outputs add registration_id and adopted (it was in MSR before)."""

    # The provider object captures no secret: credentials travel as inputs.
    serialize_as_secret_always = False

    # -- HTTP --------------------------------------------------------------

    @staticmethod
    def call(props: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
        """One API call; the requests.Response, or RegistrationError saying
        which setting to look at. 401/403 are errors here; other statuses are
        the caller's to judge."""
        import os
        import tempfile

        import requests

        api = props["api"]
        ca_file = None
        verify: bool | str = True
        if props.get("ca_pem"):
            handle, ca_file = tempfile.mkstemp(suffix=".pem")
            with os.fdopen(handle, "w") as fh:
                fh.write(props["ca_pem"])
            verify = ca_file
        try:
            response = requests.request(
                method,
                api + path,
                json=body,
                auth=(props["user"], props["token"]),
                verify=verify,
                timeout=TIMEOUT_SECONDS,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError:
            raise RegistrationError(
                f"MSR at {api}: its TLS certificate could not be verified; expected msr-cache:msrCaCert to "
                "hold the CA that signed it (or fetchMsrCa: true), as for the cache's own upstream"
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            kind = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "refused or unreachable"
            raise RegistrationError(
                f"MSR's API at {api} is unreachable ({kind}); check msr-cache:msrHost and msr-cache:msrPort, "
                "and that this machine can reach MSR"
            ) from None
        finally:
            if ca_file:
                os.unlink(ca_file)
        if response.status_code in (401, 403):
            raise RegistrationError(
                f"MSR at {api} refused the credentials of msr-cache:msrUser {props['user']!r} "
                f"(HTTP {response.status_code}); expected an MSR admin and its access token or password "
                "in msr-cache:msrToken (set as a secret)"
            )
        return response

    @staticmethod
    def detail(response: Any) -> str:
        """What MSR said, short, for an error line."""
        text = " ".join((response.text or "").split())
        return text[:200] or response.reason or ""

    @staticmethod
    def entries(response: Any) -> list[dict[str, str]]:
        """The registrations of a GET answer, as {id, name, host}."""
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            data = lists[0] if len(lists) == 1 else None
        if not isinstance(data, list):
            raise RegistrationError(
                f"MSR's {API_PATH} answered something other than a list of content caches "
                f"(HTTP {response.status_code}: {RegistrationProvider.detail(response)})"
            )
        found = []
        for entry in data:
            if isinstance(entry, dict) and "id" in entry:
                found.append(
                    {
                        "id": str(entry["id"]),
                        "name": str(entry.get("name", "")),
                        "host": str(entry.get("host", "")),
                    }
                )
        return found

    @staticmethod
    def registrations(props: dict[str, Any]) -> list[dict[str, str]]:
        response = RegistrationProvider.call(props, "GET", API_PATH)
        if response.status_code != 200:
            raise RegistrationError(
                f"MSR at {props['api']} did not list its content caches (HTTP {response.status_code}: "
                f"{RegistrationProvider.detail(response)})"
            )
        return RegistrationProvider.entries(response)

    @staticmethod
    def same_host(a: str, b: str) -> bool:
        return a.rstrip("/").lower() == b.rstrip("/").lower()

    # -- the resource ----------------------------------------------------------

    @staticmethod
    def state(props: dict[str, Any], registration_id: str, adopted: bool) -> dict[str, Any]:
        keys = ("api", "ca_pem", "user", "token", "name", "host")
        return {**{k: props.get(k) for k in keys}, "registration_id": registration_id, "adopted": adopted}

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        name, host = props["name"], props["host"]
        for entry in self.registrations(props):
            if entry["name"] != name:
                continue
            if self.same_host(entry["host"], host):
                return dyn.CreateResult(entry["id"], self.state(props, entry["id"], True))
            raise RegistrationError(
                f"MSR already has a content cache named {name!r}, for {entry['host']}, not {host}; expected "
                "msr-cache:cacheName to name this cache uniquely (or remove that registration in MSR first)"
            )
        response = self.call(props, "POST", API_PATH, {"name": name, "host": host})
        if response.status_code not in (200, 201):
            raise RegistrationError(
                f"MSR refused to register content cache {name!r} at {host} (HTTP {response.status_code}: "
                f"{self.detail(response)}); check msr-cache:cacheName and msr-cache:cacheHost/cachePort"
            )
        registration_id = self.created_id(props, response)
        return dyn.CreateResult(registration_id, self.state(props, registration_id, False))

    @staticmethod
    def created_id(props: dict[str, Any], response: Any) -> str:
        """The new registration's id: from the answer when it has one, else by name."""
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict) and data.get("id") not in (None, ""):
            return str(data["id"])
        for entry in RegistrationProvider.registrations(props):
            if entry["name"] == props["name"]:
                return entry["id"]
        raise RegistrationError(
            f"MSR accepted content cache {props['name']!r} but does not list it; check MSR's logs"
        )

    def read(self, id_: str, props: dict[str, Any]) -> dyn.ReadResult:
        for entry in self.registrations(props):
            if entry["id"] == id_:
                # What MSR holds now: a host changed in MSR shows as a diff.
                return dyn.ReadResult(
                    id_, {**self.state(props, id_, bool(props.get("adopted"))), "host": entry["host"]}
                )
        # Deleted in MSR: refresh drops it, and the next `up` registers it again.
        return dyn.ReadResult(None, {})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        replaces = [key for key in IDENTITY if olds.get(key) != news.get(key)]
        changes = bool(replaces) or any(olds.get(k) != news.get(k) for k in ("ca_pem", "user", "token"))
        # Delete first: MSR refuses a second cache of the same name.
        return dyn.DiffResult(changes=changes, replaces=replaces, delete_before_replace=True)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        # Only how MSR is reached changed (credentials, CA): check they work.
        self.registrations(news)
        return dyn.UpdateResult(self.state(news, id_, bool(olds.get("adopted"))))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        response = self.call(props, "DELETE", f"{API_PATH}/{id_}")
        if response.status_code not in (200, 202, 204, 404):
            raise RegistrationError(
                f"MSR did not remove content cache {props.get('name')!r} (id {id_}): HTTP "
                f"{response.status_code}: {self.detail(response)}"
            )


pickle_by_value(RegistrationProvider)
pickle_by_value(RegistrationError)


class Registration(ByValueResource, module="msrcache", name="Registration"):
    """One content cache registered with MSR."""

    registration_id: pulumi.Output[str]
    adopted: pulumi.Output[bool]

    def __init__(
        self,
        name: str,
        api: str,
        ca_pem: str,
        user: str,
        token: pulumi.Input[str],
        cache_name: str,
        host: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "api": api,
            "ca_pem": ca_pem,
            "user": user,
            "token": pulumi.Output.secret(token),
            "name": cache_name,
            "host": host,
            "registration_id": None,
            "adopted": None,
        }
        secret = pulumi.ResourceOptions(additional_secret_outputs=["token"])
        super().__init__(RegistrationProvider(), name, props, pulumi.ResourceOptions.merge(secret, opts))


@dataclass
class CacheRegistrationArgs:
    msr_url: str
    """https://<msrHost>:<msrPort>: MSR's API, where the cache's upstream is."""
    msr_ca_pem: str
    """MSR's CA (msrCaCert or fetched); "" when MSR is publicly trusted."""
    user: str
    token: str
    """The admin's access token or password: made a secret here, at once."""
    cache_name: str
    cache_url: str
    """What MSR redirects users' layer downloads to (http.host of config.yml)."""
    after: list[pulumi.Resource]
    """Registered once these exist, and removed before them (the service)."""


class CacheRegistration(pulumi.ComponentResource):
    """The cache, registered with MSR by `up` and removed from it by `destroy`."""

    registration_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: CacheRegistrationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("msrcache:index:CacheRegistration", name, None, opts)
        entry = Registration(
            f"{name}-entry",
            api=args.msr_url,
            ca_pem=args.msr_ca_pem,
            user=args.user,
            token=pulumi.Output.secret(args.token),
            cache_name=args.cache_name,
            host=args.cache_url,
            # A new name, host or MSR replaces it, the old one deleted first: MSR
            # refuses a second cache of one name (the provider's diff says so too).
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.after, delete_before_replace=True),
        )
        self.registration_id = entry.registration_id
        self.register_outputs({"registrationId": self.registration_id, "cacheName": args.cache_name})
