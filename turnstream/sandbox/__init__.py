"""The sandbox of the `bash` tool: bubblewrap, no network, limits; fail closed (docs/sandbox.md)."""
