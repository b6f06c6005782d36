"""Noise-encrypted trio transport between nodes (DESIGN §6): streams, connections, server.

The trio shell around the pure `trustix_p2p.core.noise` and `trustix_p2p.core.wire`: it owns
sockets, timeouts and randomness for ephemeral keys, and nothing else.
"""

from trustix_p2p.transport.address import (
    PeerAddress,
    format_host_port,
    parse_listen_address,
    parse_peer_address,
)
from trustix_p2p.transport.connection import (
    CONNECTION_ERRORS,
    Connection,
    PeerUnreachableError,
    TransportLimits,
    connect,
    open_connection,
    ping,
    run_connection,
)
from trustix_p2p.transport.network import TCP, MemoryNetwork, Network, TcpNetwork
from trustix_p2p.transport.server import Handler, answer_pings, serve_noise, serve_stream
from trustix_p2p.transport.stream import NoiseStream

__all__ = [
    "CONNECTION_ERRORS",
    "TCP",
    "Connection",
    "Handler",
    "MemoryNetwork",
    "Network",
    "NoiseStream",
    "PeerAddress",
    "PeerUnreachableError",
    "TcpNetwork",
    "TransportLimits",
    "answer_pings",
    "connect",
    "format_host_port",
    "open_connection",
    "parse_listen_address",
    "parse_peer_address",
    "ping",
    "run_connection",
    "serve_noise",
    "serve_stream",
]
