"""connchaos: measure how long a server holds the connections of clients that died silently."""

__version__ = "0.1.0"
