"""The /docs page in a real headless browser: Chromium loads it from a running service, and the DOM it renders
shows every operation of the service's live OpenAPI document (method, path, links to its schemas) and every schema;
a screenshot of it is a real picture, not a blank page. Needs Chromium (`apt-get install chromium`; .ci/run
installs it): without it the test fails and says so, it never skips."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import zlib
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.e2e

SERVICES = ("customers", "accounts", "visitors", "notifications")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    pytest.fail(
        "Chromium is not installed, and the /docs page must be checked in a real browser: "
        "apt-get install -y chromium (.ci/run does it), or point CHROMIUM at a Chrome or Chromium binary",
        pytrace=False,
    )


async def browse(tmp_path: Path, *args: str) -> bytes:
    """Runs headless Chromium on its own throw-away profile; returns what it prints."""
    proc = await asyncio.create_subprocess_exec(
        chromium(),
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"Chromium did not finish within 60 s: {args}") from None
    assert proc.returncode == 0, f"Chromium exited with {proc.returncode}: {err.decode(errors='replace')[-2000:]}"
    return out


class Dom(HTMLParser):
    """The texts (one per text node) inside each element that has an id and under each h3 (a schema's section),
    the h2 headings, the anchors' targets and the title."""

    def __init__(self) -> None:
        super().__init__()
        self.text_by_id: dict[str, list[str]] = {}
        self.headings: list[str] = []
        self.anchors: list[str] = []
        self.sections: dict[str, list[str]] = {}
        self.title = ""
        self._section: str | None = None
        self._open: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "a" and (attributes.get("href") or "").startswith("#"):
            self.anchors.append(attributes["href"][1:])  # type: ignore[index]
        if tag in VOID:
            return
        if tag == "h2":
            self._section = None
        elif tag == "h3":
            self._section = attributes.get("id")
            if self._section:
                self.sections[self._section] = []
        if attributes.get("id"):
            self.text_by_id[attributes["id"]] = []  # type: ignore[index]
        self._open.append((tag, attributes.get("id")))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        text = data.strip()
        if not text:
            return
        if self._section:
            self.sections[self._section].append(text)
        for _, id_ in self._open:
            if id_:
                self.text_by_id[id_].append(text)
        if self._open and self._open[-1][0] == "h2":
            self.headings.append(text)
        if self._open and self._open[-1][0] == "title":
            self.title += text


def png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the (still filtered) pixel bytes of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG"
    width = height = 0
    idat = b""
    at = 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.mark.parametrize("service", SERVICES)
async def test_the_docs_page_renders_every_operation_and_schema_in_a_real_browser(system_factory, tmp_path, service):
    chromium()  # fail at once, before starting anything, when there is no browser
    system = system_factory(services=(service,))
    await system.start(service)
    url = system.urls[service]
    async with aiohttp.ClientSession() as http, http.get(f"{url}/openapi.json") as r:
        assert r.status == 200
        doc = await r.json()

    dom = Dom()
    dom.feed((await browse(tmp_path, "--dump-dom", f"{url}/docs")).decode())

    assert dom.title == doc["info"]["title"]
    assert "Operations" in dom.headings and "Schemas" in dom.headings, dom.headings
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            shown = dom.text_by_id.get(op["operationId"])
            assert shown is not None, f"{method.upper()} {path} ({op['operationId']}) is not on the page"
            # the method is written in lower case and shown in capitals by the style sheet
            assert method in shown and path in shown, f"{method.upper()} {path}: {shown}"
            for code in op["responses"]:
                assert code in shown, f"{method.upper()} {path} does not show its {code} response"
    for name, schema in doc["components"]["schemas"].items():
        assert f"schema-{name}" in dom.sections, f"schema {name} has no section"
        assert dom.text_by_id[f"schema-{name}"] == [name]
        for field in schema.get("properties", {}):
            assert field in dom.sections[f"schema-{name}"], f"schema {name} does not show its field {field}"
    dead = {anchor for anchor in dom.anchors if anchor not in dom.text_by_id}
    assert not dead, f"links to sections that do not exist: {sorted(dead)}"
    if service == "customers":
        create = dom.text_by_id["create_customer"]
        assert "post" in create and "/v1/customers" in create and "CustomerCreate" in create, create
        assert "schema-CustomerCreate" in dom.anchors
        fields = set(dom.sections["schema-CustomerCreate"])
        assert {"full_name", "email", "company_name", "phone", "send_welcome"} <= fields, fields

    screenshot = tmp_path / f"{service}-docs.png"
    await browse(tmp_path, "--hide-scrollbars", "--window-size=1280,1600", f"--screenshot={screenshot}", f"{url}/docs")
    assert screenshot.exists() and screenshot.stat().st_size > 10_000, "the screenshot is missing or empty"
    width, height, pixels = png_pixels(screenshot.read_bytes())
    assert (width, height) == (1280, 1600), (width, height)
    assert len(set(pixels)) > 32, f"the screenshot looks blank: {screenshot}"
