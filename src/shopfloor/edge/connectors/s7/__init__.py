"""Siemens S7 connector: polls DB, M, I and Q areas of an S7-300/400/1200/1500 over S7comm.

The protocol lives in python-snap7; this package only maps configured points onto area reads
(:mod:`.codec`), runs snap7's blocking calls on one worker thread per PLC (:mod:`.link`) and
polls each device with a :class:`~shopfloor.edge.poller.DevicePoller` (:mod:`.connector`).
"""

from shopfloor.edge.connectors.s7.config import S7Config, S7Device, S7Point

__all__ = ["S7Config", "S7Device", "S7Point"]
