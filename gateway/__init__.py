"""A self-hosted IoT device gateway compatible with Exosite Murano's IoT Connector."""

__all__ = ["__version__"]

__version__ = "0.1.0"
