"""Memory cgroups, v1 and v2: the names the rest of spikewatch imports
(``from spikewatch.sampler import cgroup``). The code lives in
:mod:`spikewatch.sampler.cgroups`, one module per job."""

from .cgroups import *  # noqa: F403  (the package's public names, listed once in its __all__)
from .cgroups import __all__ as __all__
from .cgroups.lifecycle import _v2_home  # noqa: F401  (tests of the v2 leaf move use it)
