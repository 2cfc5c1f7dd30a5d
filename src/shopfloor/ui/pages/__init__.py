"""The console's pages; importing this package registers them with NiceGUI."""

from shopfloor.ui.pages import (
    alarms,
    apps,
    audit,
    condition,
    dashboards,
    gateways,
    login,
    machine,
    oee,
    predictive,
    rules,
    spc,
    tenants,
    tree,
)

__all__ = [
    "alarms",
    "apps",
    "audit",
    "condition",
    "dashboards",
    "gateways",
    "login",
    "machine",
    "oee",
    "predictive",
    "rules",
    "spc",
    "tenants",
    "tree",
]
