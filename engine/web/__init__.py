"""The broadcast page and its server."""
