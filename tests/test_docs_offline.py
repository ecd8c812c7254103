"""``/docs`` (Swagger UI) and ``/redoc`` work with no internet: their pages reference no other
host, and every file they load is served by the sidecar from the installed package — behind
the token, like the pages, when the server has one."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

import routewise as rw
from routewise.server import create_app

pytestmark = pytest.mark.anyio

ARMS = ["openai:gpt-5.4/direct_emit", "ollama:llama3/direct_emit"]
TOKEN = "tok-docs-offline"
PAGES = ["/docs", "/redoc"]
_ASSET_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


class _References(HTMLParser):
    """Every URL an HTML page loads or links to (``src``, ``href``)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]


def references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


@pytest.fixture()
def ctl() -> Iterator[rw.Controller]:
    c = rw.Controller(arms=ARMS, seed=0)
    yield c
    c.close()


def client_for(app: Any, **kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://rw", **kw)


@pytest.fixture()
async def api(ctl: rw.Controller) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(ctl)) as c:
        yield c


@pytest.mark.parametrize("page", PAGES)
async def test_page_references_no_other_host(api: httpx.AsyncClient, page: str) -> None:
    r = await api.get(page)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert not re.search(r"https?://", html), re.findall(r"https?://\S+", html)
    assert "//cdn" not in html and "cdn." not in html and "fonts.googleapis" not in html
    urls = references(html)
    assert urls, "the page loads nothing?"
    assert all(u.startswith("/") and not u.startswith("//") for u in urls), urls


@pytest.mark.parametrize("page", PAGES)
async def test_every_file_a_page_loads_is_served(api: httpx.AsyncClient, page: str) -> None:
    html = (await api.get(page)).text
    urls = references(html)
    # the scripts the page runs, by name: the page is blank without them
    kind = "swagger-ui-bundle.js" if page == "/docs" else "redoc.standalone.js"
    assert any(u.endswith(kind) for u in urls), urls
    if page == "/docs":
        assert any(u.endswith(".css") for u in urls), urls
    for url in urls:
        r = await api.get(url)
        assert r.status_code == 200, url
        suffix = url[url.rfind(".") :]
        types = _ASSET_TYPES[suffix]
        assert r.headers["content-type"].split(";")[0].strip() in types, (url, r.headers)
        assert len(r.content) > 1000 or suffix == ".png", url
    # the OpenAPI document the page renders is served too
    spec_url = re.search(r"""(?:url: |spec-url=)["']([^"']+)["']""", html)
    assert spec_url is not None and spec_url.group(1) == "/openapi.json"
    assert (await api.get(spec_url.group(1))).json()["info"]["title"] == "routewise sidecar"


async def test_swagger_ui_bundle_is_the_real_library(api: httpx.AsyncClient) -> None:
    js = (await api.get("/docs/static/swagger-ui-bundle.js")).text
    assert "SwaggerUIBundle" in js
    css = (await api.get("/docs/static/swagger-ui.css")).text
    assert ".swagger-ui" in css
    assert "Redoc" in (await api.get("/docs/static/redoc.standalone.js")).text


async def test_files_are_cacheable_and_only_the_packaged_ones(api: httpx.AsyncClient) -> None:
    first = await api.get("/docs/static/swagger-ui.css")
    again = await api.get(
        "/docs/static/swagger-ui.css", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    for name in ["nope.js", "%2E%2E", "__init__.py", "..%2F__init__.py", "%2e%2e%2fcore.py"]:
        r = await api.get(f"/docs/static/{name}")
        assert r.status_code == 404, name
        assert r.json()["error"] == "NotFound"


async def test_static_files_are_not_in_the_openapi_document(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    assert not [p for p in spec["paths"] if p.startswith(("/docs", "/redoc", "/openapi"))]


async def test_pages_and_files_need_the_token_when_the_server_has_one(
    ctl: rw.Controller,
) -> None:
    app = create_app(ctl, token=TOKEN)
    paths = [*PAGES, "/docs/static/swagger-ui-bundle.js", "/docs/static/redoc.standalone.js"]
    async with client_for(app) as anon:
        for path in paths:
            r = await anon.get(path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"] == "Bearer"
    async with client_for(app, headers={"Authorization": f"Bearer {TOKEN}"}) as authed:
        for page in PAGES:
            html = (await authed.get(page)).text
            for url in references(html):
                assert (await authed.get(url)).status_code == 200, url


async def test_pages_follow_the_root_path(ctl: rw.Controller) -> None:
    """Behind a proxy that mounts the app under a prefix, the pages load from under it."""
    app = create_app(ctl)
    transport = httpx.ASGITransport(app, root_path="/rw")
    async with httpx.AsyncClient(transport=transport, base_url="http://rw") as c:
        html = (await c.get("/docs")).text
    urls = references(html)
    assert urls and all(u.startswith("/rw/docs/static/") for u in urls), urls
    assert "'/rw/openapi.json'" in html
