"""CurveZMQ security: key files, CURVE servers and clients, ZAP authentication.

- :mod:`zjobs.transport.security.keys`: key pairs and pyzmq certificate files (``zjobs keygen``).
- :mod:`zjobs.transport.security.curve`: :class:`CurveServer` for processors, :class:`CurveClient`
  for everything that connects.
- :mod:`zjobs.transport.security.zap`: the per-context authenticator that checks client keys.
"""

from zjobs.transport.security.curve import CurveClient, CurveServer
from zjobs.transport.security.keys import (
    KeyPair,
    load_allowed_keys,
    load_public_key,
    write_key_pair,
)

__all__ = [
    "CurveClient",
    "CurveServer",
    "KeyPair",
    "load_allowed_keys",
    "load_public_key",
    "write_key_pair",
]
