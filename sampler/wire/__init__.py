"""The wire: what the sampler, the driver and the analysis all speak.

* :mod:`.protocol` — one typed definition per message, with its encoder and decoder.
* :mod:`.stream` — the sampler's PUB publisher, inlet and journal thread.
* :mod:`.recording` — the recording format (the stream, length-framed).
* :mod:`.client` — subscribers and inlet senders for the other parts.
* :mod:`.security` — CURVE keys, the ZAP authenticator, the loopback rule.
* :mod:`.handshake` — why a sampler refused a client, in one sentence.

Imports only the standard library, pyzmq and msgpack: the daemon links it too.
"""
