"""Device credentials and ACLs pushed into Mosquitto's dynamic-security plugin.

With an external broker the platform's subscriber cannot tell who published a message, so
the broker itself must hold each device's login and topics. Commands go as JSON to
``$CONTROL/dynamic-security/v1`` with an admin login (``mqtt_dynsec_url``); answers come back on
``.../response`` in order, one per command. See ``man mosquitto_ctrl_dynsec``.

Mosquitto only accepts a plain password at createClient, and the platform keeps tokens and
passwords hashed, so a device is pushed when its credential is issued (``add_device``), not
from the registry afterwards. A token login on Mosquitto sends the token as username and
password.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, Final

import orjson
from gmqtt import Client, Subscription
from gmqtt.mqtt.constants import MQTTv311

from shopfloor.core.errors import ShopfloorError
from shopfloor.ingest.mqtt.acl import device_acls

log = logging.getLogger(__name__)

CONTROL: Final = "$CONTROL/dynamic-security/v1"
TIMEOUT_S: Final = 10.0
PLATFORM_ROLE: Final = "shopfloor-platform"
# Errors that mean "already so", harmless when a sync repeats itself.
_IDEMPOTENT: Final = ("already exists", "not found")


class DynSecError(ShopfloorError):
    status_code = 502


CREDENTIAL_TAG = "credential "


def device_role(tenant: str, device: str) -> str:
    return f"sf:{tenant}:{device}"


class DynSec:
    def __init__(self, url: Any) -> None:
        self.url = url
        self._client = Client(f"shopfloor-dynsec-{uuid.uuid4().hex[:8]}")
        if url.username is not None:
            self._client.set_auth_credentials(url.username, url.password)
        self._client.on_message = self._on_message
        self._lock = asyncio.Lock()
        self._answer: asyncio.Future[list[dict[str, Any]]] | None = None

    async def connect(self) -> None:
        await asyncio.wait_for(
            self._client.connect(self.url.host, self.url.port, version=MQTTv311), TIMEOUT_S
        )
        self._client.subscribe(Subscription(CONTROL + "/response", qos=1))
        await self.send([{"command": "listRoles"}])  # waits until the subscription is live

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.disconnect(), TIMEOUT_S)

    async def _on_message(self, _c: Client, topic: str, payload: bytes, _qos: int, _p: Any) -> int:
        if self._answer is not None and not self._answer.done():
            try:
                self._answer.set_result(orjson.loads(payload).get("responses", []))
            except (orjson.JSONDecodeError, AttributeError):
                log.warning("unreadable dynamic-security response on %s", topic)
        return 0

    async def send(
        self, commands: list[dict[str, Any]], tolerate: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Run commands in order; raises DynSecError naming the first that failed."""
        async with self._lock:
            deadline = asyncio.get_running_loop().time() + TIMEOUT_S
            while True:  # the first request can race the response subscription: repeat it
                self._answer = asyncio.get_running_loop().create_future()
                self._client.publish(CONTROL, orjson.dumps({"commands": commands}), qos=1)
                try:
                    responses = await asyncio.wait_for(self._answer, 1.0)
                    break
                except TimeoutError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise DynSecError("Mosquitto dynamic-security did not answer") from None
        for cmd, resp in zip(commands, responses, strict=False):
            error = resp.get("error")
            if error and not any(t in str(error) for t in tolerate):
                what = cmd.get("username") or cmd.get("rolename") or ""
                raise DynSecError(f"dynamic-security {cmd['command']} {what}: {error}")
        return responses

    async def ensure_platform(self, username: str, password: str, share_group: str) -> None:
        """The platform's own login: reads every device topic, writes commands and STATE, and
        carries durable batches and alarm changes between its processes (rules/bus.py)."""
        roots = ("sf/v1/#", "spBv1.0/#", "sf/internal/#")
        # Mosquitto 2.0 checks a shared subscription's ACL with its $share/<group>/ prefix.
        acls = [("subscribePattern", t) for t in roots]
        acls += [("subscribePattern", f"$share/{share_group}/{t}") for t in roots]
        acls += [("publishClientSend", t) for t in roots]
        await self._role(PLATFORM_ROLE, acls)
        await self.send([{"command": "deleteClient", "username": username}], _IDEMPOTENT)
        await self.send(
            [
                {
                    "command": "createClient",
                    "username": username,
                    "password": password,
                    "roles": [{"rolename": PLATFORM_ROLE}],
                }
            ]
        )

    async def add_device(self, identity: Any, username: str, password: str) -> None:
        """Push one device credential with its topic ACLs (replacing an earlier one)."""
        publish, subscribe = device_acls(identity)
        role = device_role(identity.tenant, identity.device)
        acls = [("publishClientSend", t) for t in publish]
        acls += [("subscribePattern", t) for t in subscribe]
        await self._role(role, acls)
        await self.send([{"command": "deleteClient", "username": username}], _IDEMPOTENT)
        await self.send(
            [
                {
                    "command": "createClient",
                    "username": username,
                    "password": password,
                    # names the credential, so a token (stored hashed) can be found to revoke
                    "textname": f"{identity.tenant}/{identity.device} {CREDENTIAL_TAG}"
                    f"{identity.credential_id}",
                    "roles": [{"rolename": role}],
                }
            ]
        )

    async def revoke(self, username: str) -> None:
        """Delete a device login; Mosquitto disconnects a client that is using it."""
        await self.send([{"command": "deleteClient", "username": username}], _IDEMPOTENT)

    async def revoke_credentials(self, credential_ids: set[int]) -> int:
        """Delete the logins pushed for these credentials (found by their text name, since the
        platform keeps only a token's hash); returns how many were deleted."""
        (listed,) = await self.send([{"command": "listClients", "verbose": True}])
        clients = (listed.get("data") or {}).get("clients") or []
        doomed = []
        for client in clients:
            _, tag, cid = str(client.get("textname") or "").rpartition(" " + CREDENTIAL_TAG)
            if tag and cid.isdigit() and int(cid) in credential_ids:
                doomed.append(client["username"])
        for username in doomed:
            await self.revoke(username)
        return len(doomed)

    async def _role(self, role: str, acls: list[tuple[str, str]]) -> None:
        await self.send([{"command": "deleteRole", "rolename": role}], _IDEMPOTENT)
        commands: list[dict[str, Any]] = [{"command": "createRole", "rolename": role}]
        commands += [
            {
                "command": "addRoleACL",
                "rolename": role,
                "acltype": kind,
                "topic": topic,
                "priority": 0,
                "allow": True,
            }
            for kind, topic in acls
        ]
        await self.send(commands)
