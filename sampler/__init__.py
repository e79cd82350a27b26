"""The spikewatch sampler: reads process and cgroup memory every millisecond.

Imports only the standard library, psutil, pyzmq and msgpack.
"""

__version__ = "0.1.0"
