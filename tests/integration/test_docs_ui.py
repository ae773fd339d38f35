"""/docs and /redoc on a real `corral up`: every asset they load comes from the server itself, so they work
on a machine without internet. (No browser here: the page's HTML is read for what it would load, and each
of those URLs is fetched from the server.)"""

from __future__ import annotations

import re

import pytest

from tests.harness import Cluster

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_load_only_from_the_server(module_standalone: Cluster, page: str) -> None:
    standalone = module_standalone  # one `corral up` for both pages (tests/conftest.py): they only read
    r = standalone.client.get(page)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    loads = re.findall(r'(?:src|href)="([^"]+)"', r.text) + re.findall(r"url: '([^']+)'", r.text)
    assert loads, r.text
    assert not [u for u in loads if "://" in u], f"{page} loads from elsewhere: {loads}"
    assert "fonts.googleapis" not in r.text and "cdn." not in r.text
    for url in {u for u in loads if u.endswith((".js", ".css", ".png"))}:
        asset = standalone.client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 1000, url
    spec = standalone.client.get("/openapi.json")
    assert spec.status_code == 200 and "/v1/jobs" in spec.json()["paths"]
