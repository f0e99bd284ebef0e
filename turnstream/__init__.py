"""turnstream: a backend for AI chat whose replies survive reloads, sleeps and dropped networks.

The application is `turnstream.api.app.create_app`; the settings are `Settings`.
"""

from turnstream.config import Settings

__version__ = "0.1.0"
__all__ = ["Settings", "__version__"]
