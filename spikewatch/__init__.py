"""spikewatch: catch the memory spikes that scrape-based metrics miss."""

__version__ = "0.1.0"
