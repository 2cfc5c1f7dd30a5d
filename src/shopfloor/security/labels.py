"""Data-classification labels and how they inherit down the hierarchy.

Assets (hierarchy nodes), devices and signals carry three labels (columns of migration 0003;
None on an asset or device means "inherit"):

- ``classification``: general < important < core (China's Data Security Law tiers). A
  signal's effective classification is the STRICTEST of its own, its device's, and the
  device's asset and every ancestor of it: marking a site core makes everything below it
  core, and nothing below can downgrade it.
- ``personal_data``: true if any level says true.
- ``residency``: the region the data must stay in; the nearest explicit value going up wins
  (signal > device > asset chain > the tenant's default), else None (no constraint).

:meth:`LabelService.effective` computes labels for many signals in a bounded number of
queries (signals and devices in chunks, the tenant's assets once), and says where each part
came from. The egress policy (security/egress.py) decides on these effective labels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select

from shopfloor.core.errors import BadInput, Forbidden, NotFound
from shopfloor.core.types import Classification
from shopfloor.registry.models import LABEL_LEN, Asset, Device, Signal, Tenant
from shopfloor.registry.service import Registry, split_key
from shopfloor.security.principal import Scope
from shopfloor.security.roles import Permission

RANK: Final = {Classification.GENERAL: 0, Classification.IMPORTANT: 1, Classification.CORE: 2}
# Region codes are short lowercase names ("cn", "eu", "eu-west"): compared as text, so one
# spelling per region matters more than any particular list.
_REGION: Final = re.compile(rf"^[a-z][a-z0-9-]{{0,{LABEL_LEN - 1}}}$")
# Signal ids per IN (...) query: well under SQLite's variable limit, and 1,000 signals is one.
_CHUNK: Final = 5000


def check_region(value: object, field: str = "residency") -> str:
    if not isinstance(value, str) or not _REGION.match(value):
        raise BadInput(
            f"region must be lowercase letters, digits and '-', starting with a letter, at "
            f"most {LABEL_LEN} characters (e.g. 'cn', 'eu'); got {value!r}",
            field,
        )
    return value


def check_classification(value: object) -> Classification:
    try:
        return Classification(str(value))
    except ValueError:
        names = ", ".join(c.value for c in Classification)
        raise BadInput(
            f"unknown classification {value!r}; use one of {names}", "classification"
        ) from None


@dataclass(frozen=True, slots=True)
class Labels:
    """Labels set on one object; None means "inherit from above"."""

    classification: Classification | None = None
    personal_data: bool | None = None
    residency: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "classification": None if self.classification is None else self.classification.value,
            "personal_data": self.personal_data,
            "residency": self.residency,
        }


@dataclass(frozen=True, slots=True)
class EffectiveLabel:
    """A signal's effective labels; ``*_from`` names the object that set each one
    ("signal:<key>", "device:<name>", "asset:<id>:<name>", "tenant"), None for the default."""

    signal_id: int
    key: str
    device_id: int
    asset_id: int | None  # where the signal's device is placed (None: unplaced)
    classification: Classification
    classification_from: str | None
    personal_data: bool
    personal_data_from: str | None
    residency: str | None
    residency_from: str | None


@dataclass(frozen=True, slots=True)
class _Node:
    """Labels with inheritance applied, at one level (the tenant, an asset, a device...)."""

    classification: Classification
    classification_from: str | None
    personal_data: bool
    personal_data_from: str | None
    residency: str | None
    residency_from: str | None

    def below(self, cls: str | None, pd: bool | None, res: str | None, where: str) -> _Node:
        """The labels one level down, where ``where`` sets its own (None inherits): the
        ONE inheritance step, for assets, devices and signals alike."""
        c, c_from = self.classification, self.classification_from
        if cls is not None and RANK[Classification(cls)] > RANK[c]:
            c, c_from = Classification(cls), where
        p, p_from = self.personal_data, self.personal_data_from
        if pd and not p:
            p, p_from = True, where
        r, r_from = (res, where) if res is not None else (self.residency, self.residency_from)
        return _Node(c, c_from, p, p_from, r, r_from)


def _top(tenant_res: str | None) -> _Node:
    """Above every asset: general, no personal data, the tenant's default residency."""
    return _Node(
        Classification.GENERAL,
        None,
        False,
        None,
        tenant_res,
        None if tenant_res is None else "tenant",
    )


class LabelService:
    """Reads effective labels and changes the labels set on objects (callers audit)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # -- effective labels ------------------------------------------------------------------

    def signal_ids(self, tenant_id: int, keys: Sequence[str]) -> list[int]:
        """Ids of "device/signal" keys (NotFound names the unknown ones)."""
        for k in keys:
            split_key(k)  # BadInput on a malformed key before any lookup
        return [int(i) for i in self.registry.resolve_keys(tenant_id, list(keys))]

    def scoped_signal_ids(self, scope: Scope, keys: Sequence[str]) -> list[int]:
        """``signal_ids`` inside the caller's subtree: a hidden key is unknown, in the same
        ``unknown signals: ...`` error (:func:`check_signal_keys`)."""
        check_signal_keys(scope, self.registry, keys)
        return self.signal_ids(scope.tenant_id, keys)

    def effective(self, tenant_id: int, signal_ids: Iterable[int]) -> dict[int, EffectiveLabel]:
        """Effective labels of the signals, by id; ids of other tenants raise NotFound.

        Queries: the tenant's default and its assets (once), then the signals with their
        devices in chunks of 5,000 — so 1,000 signals cost three queries, not one each.
        """
        wanted = list(dict.fromkeys(int(i) for i in signal_ids))
        out: dict[int, EffectiveLabel] = {}
        if not wanted:
            return out
        with self.registry._read() as s:
            tenant_res = s.scalar(select(Tenant.residency).where(Tenant.id == tenant_id))
            asset_rows = s.execute(
                select(
                    Asset.id,
                    Asset.parent_id,
                    Asset.name,
                    Asset.classification,
                    Asset.personal_data,
                    Asset.residency,
                ).where(Asset.tenant_id == tenant_id)
            ).all()
            rows: list[Any] = []
            for k in range(0, len(wanted), _CHUNK):
                chunk = wanted[k : k + _CHUNK]
                rows.extend(
                    s.execute(
                        select(
                            Signal.id,
                            Signal.name,
                            Signal.classification,
                            Signal.personal_data,
                            Signal.residency,
                            Device.id,
                            Device.name,
                            Device.asset_id,
                            Device.classification,
                            Device.personal_data,
                            Device.residency,
                        )
                        .join(Device, Signal.device_id == Device.id)
                        .where(Signal.tenant_id == tenant_id, Signal.id.in_(chunk))
                    ).all()
                )
        nodes = _asset_nodes(tenant_res, asset_rows)
        root = _top(tenant_res)
        for sid, sname, scls, spd, sres, did, dname, daid, dcls, dpd, dres in rows:
            key = f"{dname}/{sname}"
            # Top down: the asset chain, then the device, then the signal itself.
            above = root if daid is None else nodes.get(daid, root)
            n = above.below(dcls, dpd, dres, f"device:{dname}").below(
                scls, spd, sres, f"signal:{key}"
            )
            # A signal's own column always holds a tier: nothing stricter above means its own.
            cls_from = n.classification_from or f"signal:{key}"
            out[sid] = EffectiveLabel(
                sid,
                key,
                did,
                daid,
                n.classification,
                cls_from,
                n.personal_data,
                n.personal_data_from,
                n.residency,
                n.residency_from,
            )
        missing = [str(i) for i in wanted if i not in out]
        if missing:
            raise NotFound(f"unknown signal ids: {', '.join(missing)}")
        return out

    # -- labels set on objects -------------------------------------------------------------

    def set_asset(self, tenant_id: int, asset_id: int, new: Labels) -> tuple[Labels, Labels]:
        """Replace an asset's labels; returns (old, new)."""
        _check(new)
        with self.registry._write() as s:
            row = s.get(Asset, asset_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"asset {asset_id} not found")
            return _relabel(row, _cls_value(new.classification), new), new

    def set_device(self, tenant_id: int, name: str, new: Labels) -> tuple[Labels, Labels]:
        _check(new)
        with self.registry._write() as s:
            row = s.scalar(select(Device).where(Device.tenant_id == tenant_id, Device.name == name))
            if row is None:
                raise NotFound(f"device {name!r} not found")
            return _relabel(row, _cls_value(new.classification), new), new

    def set_signal(self, tenant_id: int, key: str, new: Labels) -> tuple[Labels, Labels]:
        """A signal's classification column is never NULL: null stores ``general``, the
        weakest tier, which inherits whatever stricter tier is set above."""
        _check(new)
        device, name = split_key(key)
        cls = new.classification or Classification.GENERAL
        with self.registry._write() as s:
            row = s.scalar(
                select(Signal)
                .join(Device, Signal.device_id == Device.id)
                .where(Signal.tenant_id == tenant_id, Device.name == device, Signal.name == name)
            )
            if row is None:
                raise NotFound(f"signal {key!r} not found")
            old = _relabel(row, cls.value, new)
        return old, Labels(cls, new.personal_data, new.residency)

    def tenant_residency(self, tenant_id: int) -> str | None:
        with self.registry._read() as s:
            return s.scalar(select(Tenant.residency).where(Tenant.id == tenant_id))

    def set_tenant_residency(
        self, tenant_id: int, residency: str | None
    ) -> tuple[str | None, str | None]:
        if residency is not None:
            check_region(residency)
        with self.registry._write() as s:
            row = s.get(Tenant, tenant_id)
            if row is None:
                raise NotFound(f"tenant {tenant_id} not found")
            old = row.residency
            row.residency = residency
        return old, residency


def check_signal_keys(scope: Scope, registry: Registry, keys: Sequence[str]) -> None:
    """Every ``device/signal`` key is in the scope's subtree. Hidden keys are reported in the
    same ``unknown signals: ...`` error as unknown ones, in the order asked, so a subtree
    user cannot tell them apart. Whole-tenant scopes return at once, without a query.

    Lives here (not in api/scoping.py, which re-exports it) so that the security services
    (labels, egress) use the same rule as the routes."""
    if scope.assets is None:
        return
    devices = [split_key(k)[0] for k in keys]  # a malformed key fails first, as unscoped
    places = registry.device_assets(scope.tenant_id)
    hidden = {
        k
        for k, d in zip(keys, devices, strict=True)
        if d in places and not scope.allows_asset(places[d])
    }
    if not hidden:
        return
    unknown = set()
    for k in dict.fromkeys(keys):
        if k in hidden:
            continue
        try:
            registry.resolve_keys(scope.tenant_id, [k])
        except NotFound:
            unknown.add(k)
    named = [k for k in dict.fromkeys(keys) if k in hidden or k in unknown]
    raise NotFound(f"unknown signals: {', '.join(named)}")


def classification_change(
    registry: Registry, scope: Scope, key: str, classification: object
) -> tuple[str, str] | None:
    """(old, new) when a registry edit would change a signal's classification, else None.

    Forbidden unless the caller holds labels.write: a registry writer (engineer) must not
    downgrade a label, and the security admin's way is PUT /api/v1/labels/signals/{key}.
    """
    if classification is None:
        return None
    new = check_classification(classification)
    old = registry.get_signal(scope.tenant_id, key).classification
    if old == new:
        return None
    if not scope.principal.holds(Permission.LABELS_WRITE, scope.tenant_id):
        raise Forbidden(
            "changing a signal's classification needs the labels.write permission (a security"
            " admin: PUT /api/v1/labels/signals/{key})"
        )
    return old.value, new.value


def _check(labels: Labels) -> None:
    if labels.classification is not None:
        check_classification(labels.classification)
    if labels.residency is not None:
        check_region(labels.residency)


def _cls_value(c: Classification | None) -> str | None:
    return None if c is None else Classification(c).value


def _labels_of(cls: str | None, pd: bool | None, res: str | None) -> Labels:
    return Labels(None if cls is None else Classification(cls), pd, res)


def _relabel(row: Asset | Device | Signal, classification: str | None, new: Labels) -> Labels:
    """Write ``new`` over a row's label columns (``classification`` as stored); the old."""
    old = _labels_of(row.classification, row.personal_data, row.residency)
    # Signal.classification is NOT NULL: set_signal always passes a tier.
    row.classification = classification
    row.personal_data = new.personal_data
    row.residency = new.residency
    return old


def _asset_nodes(
    tenant_res: str | None,
    rows: Sequence[tuple[int, int | None, str, str | None, bool | None, str | None]],
) -> dict[int, _Node]:
    """Every asset's inherited labels, each computed once from its parent's."""
    by_id = {r[0]: r for r in rows}
    done: dict[int, _Node] = {}
    top = _top(tenant_res)
    for start in by_id:
        # Walk up to the nearest computed ancestor, then fill the path top down. `seen`
        # guards a hand-edited cycle, which would otherwise loop forever.
        path: list[int] = []
        seen: set[int] = set()
        node: int | None = start
        while node is not None and node not in done and node in by_id and node not in seen:
            seen.add(node)
            path.append(node)
            node = by_id[node][1]
        above = done.get(node, top) if node is not None else top
        for aid in reversed(path):
            _, _, name, cls, pd, res = by_id[aid]
            above = above.below(cls, pd, res, f"asset:{aid}:{name}")
            done[aid] = above
    return done
