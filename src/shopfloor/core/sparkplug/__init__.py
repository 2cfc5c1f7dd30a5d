"""The Sparkplug B wire format, shared by the edge node (edge/uplinks/sparkplug) and the
platform's host application (ingest/sparkplug): the protobuf module generated from the
specification's ``sparkplug_b.proto`` and small encode/decode helpers (``payload``).

Only ``protobuf`` is needed here, so the edge gateway can import it on its own.
"""
