"""Walk a server's address space into a tag list, and turn the tag list into a config section.

``browse`` goes breadth-first from ``root`` (the Objects folder by default), level by level:
each level is one Browse call per ``max_nodes_per_browse`` nodes (continuation points
followed with BrowseNext), and the variables found on it get their DataType and AccessLevel
in one Read per ``max_nodes_per_read``. So a server of 10,000 variables under 100 objects is
a handful of calls, not 10,000 round trips. The walk is bounded by ``max_depth`` and
``max_tags``.

``browse_to_yaml`` is what ``shopfloor edge browse URL`` prints: a connector section, one
device per object that holds variables, ready to edit and paste into the gateway config.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from asyncua import ua

from shopfloor.edge.connectors.opcua._ua import (
    AttributeIds,
    Client,
    ObjectIdNames,
    ObjectIds,
    UaError,
    node_id,
)
from shopfloor.edge.connectors.opcua.config import OpcUaConfig, SecurityConfig
from shopfloor.edge.connectors.opcua.session import describe_error, make_client, read_limits

__all__ = ["TagEntry", "browse", "browse_to_yaml", "tags_to_config"]

_BROWSE_MASK = ua.NodeClass.Object.value | ua.NodeClass.Variable.value


@dataclass(frozen=True)
class TagEntry:
    node_id: str  # e.g. "ns=2;s=dev000.v0001"
    browse_path: str  # browse names from below the root, "/"-separated: "Plant/dev000/v0001"
    data_type: str  # built-in type name ("Double") or the data type's node id
    access: str  # "r", "w", "rw" or "" (current value access of this node)


def _access(level: int) -> str:
    read = level & ua.AccessLevel.CurrentRead.mask
    write = level & ua.AccessLevel.CurrentWrite.mask
    return ("r" if read else "") + ("w" if write else "")


def _type_name(dtype: Any) -> str:
    if isinstance(dtype, ua.NodeId):
        if dtype.NamespaceIndex == 0 and isinstance(dtype.Identifier, int):
            return str(ObjectIdNames.get(dtype.Identifier, dtype.to_string()))
        return dtype.to_string()
    return "Unknown"


async def _browse_level(
    client: Client, nodes: list[ua.NodeId], per_call: int
) -> list[list[ua.ReferenceDescription]]:
    """Forward hierarchical references of every node, objects and variables only."""
    out: list[list[ua.ReferenceDescription]] = []
    for first in range(0, len(nodes), per_call):
        params = ua.BrowseParameters()
        params.RequestedMaxReferencesPerNode = 0
        for nid in nodes[first : first + per_call]:
            desc = ua.BrowseDescription()
            desc.NodeId = nid
            desc.BrowseDirection = ua.BrowseDirection.Forward
            desc.ReferenceTypeId = node_id(ObjectIds.HierarchicalReferences)
            desc.IncludeSubtypes = True
            desc.NodeClassMask = _BROWSE_MASK
            desc.ResultMask = ua.BrowseResultMask.All.value
            params.NodesToBrowse.append(desc)
        results = await client.uaclient.browse(params)
        for res in results:
            refs = list(res.References)
            cont = res.ContinuationPoint
            for _ in range(10_000):  # bounded: a server could hand out continuation points forever
                if not cont:
                    break
                nxt = ua.BrowseNextParameters()
                nxt.ContinuationPoints = [cont]
                more = (await client.uaclient.browse_next(nxt))[0]
                refs.extend(more.References)
                cont = more.ContinuationPoint
            out.append(refs)
    return out


async def _read_attrs(
    client: Client, nodes: list[ua.NodeId], per_call: int
) -> list[tuple[str, str]]:
    """(data type name, access) per variable, two attributes per node, batched."""
    out: list[tuple[str, str]] = []
    step = max(1, per_call // 2)
    for first in range(0, len(nodes), step):
        params = ua.ReadParameters()
        for nid in nodes[first : first + step]:
            for attr in (AttributeIds.DataType, AttributeIds.AccessLevel):
                rv = ua.ReadValueId()
                rv.NodeId = nid
                rv.AttributeId = attr
                params.NodesToRead.append(rv)
        values = await client.uaclient.read(params)
        for dt, al in zip(values[::2], values[1::2], strict=True):
            dtype = dt.Value.Value if dt.Value is not None else None
            level = al.Value.Value if al.Value is not None else None
            out.append((_type_name(dtype), _access(level) if isinstance(level, int) else ""))
    return out


async def browse(
    url: str,
    *,
    root: str | None = None,
    max_depth: int = 10,
    max_tags: int = 50_000,
    include_standard: bool = False,
    security: SecurityConfig | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 10.0,
) -> list[TagEntry]:
    """Every variable below ``root`` (node id string; default Objects), at most ``max_depth`` deep.

    Nodes of namespace 0 (the standard's own: the Server diagnostics object, Aliases, ...) are
    left out unless ``include_standard``. Variables are not descended into (their children are
    properties such as EURange).
    """
    config = OpcUaConfig.model_validate(
        {
            "endpoint": url,
            "security": security or SecurityConfig(),
            "username": username,
            "password": password,
            "request_timeout_s": timeout_s,
            "devices": [{"name": "browse", "nodes": [{"node_id": "i=85", "signal": "x"}]}],
        }
    )
    client = await make_client(config)
    await asyncio.wait_for(client.connect(), timeout_s * 2)
    try:
        return await _walk(client, root, max_depth, max_tags, include_standard)
    finally:
        try:
            await asyncio.wait_for(client.disconnect(), 3.0)
        except Exception:  # already gone: nothing left to close
            client.disconnect_socket()


async def _walk(
    client: Client, root: str | None, max_depth: int, max_tags: int, include_standard: bool
) -> list[TagEntry]:
    limits = await read_limits(client)
    per_browse = limits.batch("max_nodes_per_browse")
    per_read = limits.batch("max_nodes_per_read")
    start = ua.NodeId.from_string(root) if root else node_id(ObjectIds.ObjectsFolder)
    level: list[tuple[ua.NodeId, str]] = [(start, "")]
    seen = {start.to_string()}
    tags: list[TagEntry] = []
    for _depth in range(max_depth):
        if not level or len(tags) >= max_tags:
            break
        refs = await _browse_level(client, [nid for nid, _ in level], per_browse)
        next_level: list[tuple[ua.NodeId, str]] = []
        variables: list[tuple[ua.NodeId, str]] = []
        for (_, path), children in zip(level, refs, strict=True):
            for ref in children:
                nid = ref.NodeId
                key = nid.to_string()
                if key in seen or (not include_standard and nid.NamespaceIndex == 0):
                    continue
                seen.add(key)
                child = f"{path}/{ref.BrowseName.Name}" if path else str(ref.BrowseName.Name)
                if ref.NodeClass == ua.NodeClass.Variable:
                    variables.append((nid, child))
                else:
                    next_level.append((nid, child))
        variables = variables[: max_tags - len(tags)]
        attrs = await _read_attrs(client, [nid for nid, _ in variables], per_read)
        for (nid, path), (dtype, access) in zip(variables, attrs, strict=True):
            tags.append(TagEntry(nid.to_string(), path, dtype, access))
        level = next_level
    return tags


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "root"


def tags_to_config(
    tags: list[TagEntry],
    url: str,
    *,
    publishing_interval_ms: float = 500.0,
    types: Literal["values", "all"] = "values",
) -> dict[str, Any]:
    """A connector section (YAML-ready dict): one device per parent path, one node per tag.

    With ``types="values"`` only numbers, booleans and strings are kept, the types a reading
    carries. Device names are the parent path with ``/`` as ``.``; signal names the browse
    name, made unique within the device.
    """
    keep = {
        "Boolean", "SByte", "Byte", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
        "Float", "Double", "String", "Number", "Integer", "UInteger",
    }  # fmt: skip
    devices: dict[str, list[dict[str, Any]]] = {}
    for tag in tags:
        if types == "values" and tag.data_type not in keep:
            continue
        parent, _, name = tag.browse_path.rpartition("/")
        device = _slug(parent.replace("/", ".")) if parent else "root"
        nodes = devices.setdefault(device, [])
        signal = _slug(name)
        taken = {n["signal"] for n in nodes}
        base, k = signal, 2
        while signal in taken:
            signal, k = f"{base}_{k}", k + 1
        nodes.append({"node_id": tag.node_id, "signal": signal})
    section = {
        "endpoint": url,
        "publishing_interval_ms": publishing_interval_ms,
        "devices": [{"name": name, "nodes": nodes} for name, nodes in devices.items()],
    }
    OpcUaConfig.model_validate(section)  # what is printed must load
    return section


def browse_to_yaml(
    url: str,
    *,
    root: str | None = None,
    max_depth: int = 10,
    max_tags: int = 50_000,
    username: str | None = None,
    password: str | None = None,
    certificate: Path | None = None,
    private_key: Path | None = None,
    mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt",
    timeout_s: float = 10.0,
) -> str:
    """Browse ``url`` and return the connector section as YAML (for ``shopfloor edge browse``).

    Synchronous, for the CLI: it runs its own event loop, so it must not be called from inside
    a running one (use :func:`browse` and :func:`tags_to_config` there). With ``certificate``
    and ``private_key`` it connects with Basic256Sha256 in ``mode``. Raises ``ConnectionError``
    naming the endpoint and the reason when the server cannot be browsed.
    """
    security = (
        SecurityConfig(
            policy="Basic256Sha256", mode=mode, certificate=certificate, private_key=private_key
        )
        if certificate is not None or private_key is not None
        else None
    )
    try:
        tags = asyncio.run(
            browse(
                url,
                root=root,
                max_depth=max_depth,
                max_tags=max_tags,
                security=security,
                username=username,
                password=password,
                timeout_s=timeout_s,
            )
        )
    except (OSError, TimeoutError, UaError) as exc:
        raise ConnectionError(f"cannot browse {url}: {describe_error(exc)}") from exc
    section = tags_to_config(tags, url)
    if security is not None:
        section["security"] = security.model_dump(mode="json")
    if username is not None:
        section["username"] = username
        section["password"] = "CHANGE-ME"  # never print a secret into a file meant to be shared
    n = sum(len(d["nodes"]) for d in section["devices"])
    head = f"# opcua connector section: {n} variables of {url} (from {len(tags)} browsed)\n"
    return head + yaml.safe_dump(section, sort_keys=False, allow_unicode=True)
