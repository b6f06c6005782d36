"""Finding other nodes (DESIGN §6): mDNS on the local network, bridged into trio.

Discovery only produces candidate addresses.  Every address it reports carries the key the
peer claimed, and the Noise handshake pins that key, so a lie on the LAN costs a failed
connection attempt, never a wrong peer.
"""

from trustix_p2p.discovery.mdns import (
    SERVICE_TYPE,
    Found,
    MdnsDiscovery,
    MdnsStats,
    ServiceTable,
    found_from_service,
)

__all__ = [
    "SERVICE_TYPE",
    "Found",
    "MdnsDiscovery",
    "MdnsStats",
    "ServiceTable",
    "found_from_service",
]
