"""The uplinks a gateway can use; built from the ``uplink:`` section of ``edge.yaml``."""

from __future__ import annotations

import importlib
from pathlib import Path

from shopfloor.edge.config import HttpUplinkConfig, SparkplugSection
from shopfloor.edge.uplink import Uplink

__all__ = ["build_uplink"]


def build_uplink(config: HttpUplinkConfig | SparkplugSection, data_dir: Path) -> Uplink:
    """The uplink for a validated section; imported here so only the one in use is loaded."""
    if isinstance(config, HttpUplinkConfig):
        from shopfloor.edge.uplinks.http import HttpUplink

        return HttpUplink(config, data_dir=data_dir)
    try:
        module = importlib.import_module("shopfloor.edge.uplinks.sparkplug")
        cls = module.SparkplugUplink
    except (ImportError, AttributeError) as exc:
        raise RuntimeError(f"the Sparkplug uplink is not installed: {exc}") from None
    uplink = cls(config.config)
    if not isinstance(uplink, Uplink):
        raise TypeError(f"{cls!r} is not an Uplink")
    return uplink
