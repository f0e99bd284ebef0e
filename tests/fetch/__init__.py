"""The web fetch: its address policy, the fetch itself, and their loopback doubles."""
