"""The sampler helpers moved to :mod:`tests.support.sampler`; kept for the tests that still import them here."""

from tests.support.sampler import (  # noqa: F401
    MiB, Stream, child_stamps, collect_until_final, run_sample, sample_cmd, spawn_sample, stop_sampler, write_script)
