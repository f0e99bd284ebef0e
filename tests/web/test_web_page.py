"""The chat page's files as HTTP serves them: caching, security headers, nothing from elsewhere.

These run on the in-process app; the page itself is driven in a real browser by
test_chat_page.py.
"""

from __future__ import annotations

import re

from turnstream.api.routes import web

HTML_ATTR = re.compile(r'\b(?:src|href)="([^"]*)"')
IMPORT = re.compile(r'^\s*import\b[^;]*?from\s+"([^"]+)"', re.M)


async def test_the_page_is_html_that_the_browser_asks_for_again_each_time(client):
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    again = await client.get("/", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    head = await client.head("/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(response.content))


async def test_no_inline_script_or_style_and_nothing_from_another_origin(client):
    page = (await client.get("/")).text
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.S)
    assert scripts and all(body.strip() == "" for body in scripts), "inline script"
    assert all('src="' in tag for tag in re.findall(r"<script\b[^>]*>", page))
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"<[^>]*\son[a-z]+=", page), "an inline event handler"
    for target in HTML_ATTR.findall(page):
        assert not re.match(r"^[a-z]+://|^//", target, re.I), f"{target} leaves the server"
    for name, asset in web.bundle().assets.items():
        text = asset.body.decode()
        assert "://" not in text, f"{name} names another origin"
        for specifier in IMPORT.findall(text):
            assert specifier.startswith("./"), f"{name} imports {specifier}"
            assert specifier[2:] in web.bundle().assets, f"{name} imports a missing {specifier}"


async def test_assets_live_under_a_versioned_url_and_are_cached_for_good(client):
    page = (await client.get("/")).text
    version = web.bundle().version
    targets = [t for t in HTML_ATTR.findall(page) if t.startswith("static/")]
    assert {t.rsplit("/", 1)[1] for t in targets} == {"style.css", "app.js"}
    for target in targets:
        assert target.startswith(f"static/{version}/")
        response = await client.get(f"/{target}")
        assert response.status_code == 200, target
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["last-modified"].endswith(" GMT")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        again = await client.get(f"/{target}", headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
    js = await client.get(f"/static/{version}/app.js")
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    css = await client.get(f"/static/{version}/style.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"


async def test_another_version_or_an_unknown_file_is_404(client):
    version = web.bundle().version
    assert (await client.get("/static/0123456789abcdef/app.js")).status_code == 404
    assert (await client.get(f"/static/{version}/nothing.js")).status_code == 404
    assert (await client.get(f"/static/{version}/index.html")).status_code == 404
    assert (await client.get(f"/static/{version}/..%2Fapi.js")).status_code == 404
    assert (await client.post("/")).status_code == 405


async def test_the_page_is_not_in_the_api_document(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)
