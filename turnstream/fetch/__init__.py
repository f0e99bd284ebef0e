"""The web fetch behind the `web_fetch` tool: an address policy against SSRF (guard.py), the
fetch that connects only to the address it checked (client.py), and HTML made readable
(text.py). docs/web.md says what it guards against and what it does not."""
