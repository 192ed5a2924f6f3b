"""CurveZMQ security: key files, CURVE servers and clients, ZAP authentication.

- :mod:`zjobs.security.keys`: key pairs and pyzmq certificate files (``zjobs keygen``).
- :mod:`zjobs.security.curve`: :class:`CurveServer` for processors, :class:`CurveClient`
  for everything that connects.
- :mod:`zjobs.security.zap`: the per-context authenticator that checks client keys.
"""

from zjobs.security.curve import CurveClient, CurveServer
from zjobs.security.keys import KeyPair, load_allowed_keys, load_public_key, write_key_pair

__all__ = [
    "CurveClient",
    "CurveServer",
    "KeyPair",
    "load_allowed_keys",
    "load_public_key",
    "write_key_pair",
]
