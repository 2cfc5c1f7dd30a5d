"""Opening an asyncua client session and subscribing the configured nodes in bulk.

Subscriptions are made with asyncua's service-level calls (``UaClient``) rather than its
``Subscription`` helper, because the helper turns each notification into its own event object
and task; here a whole publish response goes to one callback (see ``readings.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from asyncua import ua
from asyncua.crypto import security_policies

from shopfloor.edge.connectors.opcua._ua import (
    AttributeIds,
    Client,
    ObjectIds,
    StatusCodes,
    UaError,
    UaStatusCodeError,
    node_id,
)
from shopfloor.edge.connectors.opcua.config import NodeConfig, OpcUaConfig

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ITEMS_PER_CALL",
    "Limits",
    "Subscribed",
    "make_client",
    "read_limits",
    "subscribe",
]

DEFAULT_ITEMS_PER_CALL: Final = 1000
PublishCallback = Callable[[ua.PublishResult], None]

_LIMIT_IDS: Final = {
    "max_monitored_items_per_call": ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
    "max_nodes_per_read": ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    "max_nodes_per_write": ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerWrite,
    "max_nodes_per_browse": ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerBrowse,
}


async def make_client(config: OpcUaConfig) -> Client:
    """A client set up for the configured endpoint, security and login (not yet connected)."""
    # The session watchdog probes the server every watchdog_s; asyncua's default of 1 s dropped
    # healthy sessions of busy servers (dependency notes), so it is ~10 s here.
    client = Client(
        config.endpoint, timeout=config.request_timeout_s, watchdog_intervall=config.watchdog_s
    )
    client.name = client.description = "Shopfloor edge gateway"
    client.application_uri = "urn:shopfloor:edge:opcua-client"
    # The server drops a session we lost after this long; ours are recreated on reconnect.
    client.session_timeout = 60_000
    sec = config.security
    if sec.policy == "Basic256Sha256":
        mode = (
            ua.MessageSecurityMode.SignAndEncrypt
            if sec.mode == "SignAndEncrypt"
            else ua.MessageSecurityMode.Sign
        )
        assert sec.certificate is not None  # the model checks both
        assert sec.private_key is not None
        for path in (sec.certificate, sec.private_key, sec.server_certificate):
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"security file {str(path)!r} does not exist")
        await client.set_security(
            security_policies.SecurityPolicyBasic256Sha256,
            str(sec.certificate),
            str(sec.private_key),
            server_certificate=str(sec.server_certificate) if sec.server_certificate else None,
            mode=mode,
        )
    if config.username is not None and config.password is not None:
        client.set_user(config.username)
        client.set_password(config.password.get_secret_value())
    return client


@dataclass(frozen=True)
class Limits:
    """The server's OperationLimits that matter here; 0 means the server states no limit."""

    max_monitored_items_per_call: int = 0
    max_nodes_per_read: int = 0
    max_nodes_per_write: int = 0
    max_nodes_per_browse: int = 0

    def batch(
        self, name: str, cap: int | None = None, default: int = DEFAULT_ITEMS_PER_CALL
    ) -> int:
        """Items per call: the server's limit (default when it states none), below ``cap``."""
        limit = int(getattr(self, name)) or default
        return min(limit, cap) if cap else limit


async def read_limits(client: Client) -> Limits:
    """OperationLimits in one read; a server that does not expose them gets the defaults."""
    params = ua.ReadParameters()
    for nid in _LIMIT_IDS.values():
        rv = ua.ReadValueId()
        rv.NodeId = node_id(nid)
        rv.AttributeId = AttributeIds.Value
        params.NodesToRead.append(rv)
    try:
        values = await client.uaclient.read(params)
    except UaError as exc:
        log.info("server does not expose OperationLimits (%s); using defaults", exc)
        return Limits()
    found: dict[str, int] = {}
    for name, dv in zip(_LIMIT_IDS, values, strict=True):
        good = dv.StatusCode is None or dv.StatusCode.is_good()
        v = dv.Value.Value if dv.Value is not None else None
        found[name] = int(v) if good and isinstance(v, int) and v > 0 else 0
    return Limits(**found)


@dataclass
class Subscribed:
    subscription_ids: list[int] = field(default_factory=list)
    items_ok: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # node id -> status name
    calls: int = 0
    batch: int = 0
    revised_publishing_ms: float = 0.0
    keepalive_s: float = 0.0  # longest time the server may stay silent (revised values)


def _filter(node: NodeConfig) -> ua.DataChangeFilter | None:
    if node.deadband is None:
        return None
    f = ua.DataChangeFilter()
    f.Trigger = ua.DataChangeTrigger.StatusValue
    f.DeadbandType = (
        ua.DeadbandType.Absolute if node.deadband_type == "absolute" else ua.DeadbandType.Percent
    )
    f.DeadbandValue = node.deadband
    return f


def _item_request(
    handle: int, node: NodeConfig, sampling_ms: float, queue: int
) -> ua.MonitoredItemCreateRequest:
    rv = ua.ReadValueId()
    rv.NodeId = ua.NodeId.from_string(node.node_id)
    rv.AttributeId = AttributeIds.Value
    mp = ua.MonitoringParameters()
    mp.ClientHandle = handle
    mp.SamplingInterval = sampling_ms
    mp.QueueSize = queue
    mp.DiscardOldest = True
    flt = _filter(node)
    if flt is not None:
        mp.Filter = flt
    req = ua.MonitoredItemCreateRequest()
    req.ItemToMonitor = rv
    req.MonitoringMode = ua.MonitoringMode.Reporting
    req.RequestedParameters = mp
    return req


def item_requests(config: OpcUaConfig) -> list[ua.MonitoredItemCreateRequest]:
    """One request per configured node, client handle 1 + its row in the item table."""
    out: list[ua.MonitoredItemCreateRequest] = []
    for dev in config.devices:
        for node in dev.nodes:
            sampling = node.sampling_interval_ms
            if sampling is None:
                sampling = dev.sampling_interval_ms
            # -1 asks the server to sample at the publishing interval (Part 4, 5.12.1.2)
            ms = -1.0 if sampling is None else sampling
            out.append(_item_request(len(out) + 1, node, ms, config.queue_size))
    return out


async def subscribe(
    client: Client, config: OpcUaConfig, limits: Limits, callback: PublishCallback
) -> Subscribed:
    """Create subscriptions of ``items_per_subscription`` items, in calls within the limits."""
    requests = item_requests(config)
    batch = limits.batch("max_monitored_items_per_call", config.max_items_per_call)
    out = Subscribed(batch=batch)
    per_sub = config.items_per_subscription
    keepalive = max(1, int(10_000 / config.publishing_interval_ms))  # a keep-alive every ~10 s
    for first in range(0, len(requests), per_sub):
        chunk = requests[first : first + per_sub]
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = config.publishing_interval_ms
        params.RequestedMaxKeepAliveCount = keepalive
        params.RequestedLifetimeCount = keepalive * 3
        params.MaxNotificationsPerPublish = 0  # no cap: one response per cycle carries them all
        params.PublishingEnabled = True
        params.Priority = 0
        result = await client.uaclient.create_subscription(params, callback)
        out.subscription_ids.append(result.SubscriptionId)
        out.revised_publishing_ms = float(result.RevisedPublishingInterval)
        out.keepalive_s = max(
            out.keepalive_s,
            float(result.RevisedPublishingInterval) * int(result.RevisedMaxKeepAliveCount) / 1000,
        )
        for a in range(0, len(chunk), batch):
            part = chunk[a : a + batch]
            mparams = ua.CreateMonitoredItemsParameters()
            mparams.SubscriptionId = result.SubscriptionId
            mparams.ItemsToCreate = part
            mparams.TimestampsToReturn = ua.TimestampsToReturn.Both
            results = await client.uaclient.create_monitored_items(mparams)
            out.calls += 1
            for req, res in zip(part, results, strict=True):
                if res.StatusCode.is_good():
                    out.items_ok += 1
                else:
                    out.failed[req.ItemToMonitor.NodeId.to_string()] = res.StatusCode.name
    return out


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe_error(exc: BaseException, connecting: bool = False) -> str:
    """A one-line error for status(); while ``connecting``, a refused login or certificate is
    named plainly (later, BadUserAccessDenied means a refused write, not a wrong password)."""
    if isinstance(exc, UaStatusCodeError):
        code = exc.code
        name = ua.StatusCode(code).name
        hints: dict[int, str] = {
            StatusCodes.BadUserAccessDenied: "login refused: wrong username or password",
            StatusCodes.BadIdentityTokenInvalid: "login refused: identity token invalid",
            StatusCodes.BadIdentityTokenRejected: "login refused: identity token rejected",
            StatusCodes.BadCertificateUntrusted: "the server does not trust our certificate",
            StatusCodes.BadSecurityChecksFailed: "security checks failed (certificate or key)",
        }
        hint = hints.get(code) if connecting else None
        return f"{hint} ({name})" if hint else (str(exc) or name)
    if "No matching endpoints" in str(exc):  # asyncua's words when policy or mode mismatch
        return f"no server endpoint matches the configured security ({exc})"
    return _describe(exc)
