"""The inspector in a real headless Chromium, driven by Playwright's Python client.

The browser is the system's (Debian's ``chromium`` package, which ``.ci/run`` installs);
Playwright never downloads one. Without it (or without the ``playwright`` package) these
tests skip with one line, and fail instead under ``CI=true``.

Screenshots go to ``$CHATSTATE_UI_SCREENSHOTS`` when set (``docs/img`` refreshes the ones
in docs/inspector.md), else to the test's temporary folder.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx
import pytest

from helpers.ui_seed import SESSION, Seeded

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _chromium() -> str | None:
    found = os.environ.get("CHATSTATE_CHROMIUM")
    if found:
        return found
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _missing() -> str | None:
    if _chromium() is None:
        return "a chromium executable (apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package (pip install -e '.[ui-test]')"
    return None


MISSING = _missing()
if MISSING is not None and not CI:
    pytest.skip(f"no browser for the inspector tests: {MISSING}", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if MISSING is not None:
        pytest.fail(f"the inspector's browser tests need {MISSING} under CI=true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=_chromium(), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def server(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    with Seeded(tmp_path_factory.mktemp("ui")) as seeded:
        seeded.seed()
        yield seeded


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("CHATSTATE_UI_SCREENSHOTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Offline:
    """Every request the page makes; any that leaves 127.0.0.1 is refused and kept."""

    def __init__(self) -> None:
        self.outside: list[str] = []

    def attach(self, page: Page) -> None:
        def route(route: object) -> None:
            request = route.request  # type: ignore[attr-defined]
            host = urlsplit(request.url).hostname
            if request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
                route.continue_()  # type: ignore[attr-defined]
            else:
                self.outside.append(request.url)
                route.abort()  # type: ignore[attr-defined]

        page.route("**/*", route)


@pytest.fixture
def offline() -> Offline:
    return Offline()


def _page(browser: Browser, server: Seeded, offline: Offline, who: str | None) -> Page:
    context = browser.new_context(viewport={"width": 1200, "height": 640}, base_url=server.base_url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    offline.attach(page)
    if who is not None:
        page.goto("/ui")
        assert "/ui/login" in page.url  # no key: the login page
        page.fill("#key", server.keys[who])
        page.click("#login")
        page.wait_for_url(re.compile(r"/ui/?$"))
    return page


@pytest.fixture
def admin(browser: Browser, server: Seeded, offline: Offline) -> Iterator[Page]:
    page = _page(browser, server, offline, "admin")
    yield page
    page.context.close()
    assert offline.outside == []


def test_sessions_list_search_and_paging(admin: Page, server: Seeded, shots: Path) -> None:
    row = admin.locator(f"tr[data-session='{SESSION}']")
    cells = row.locator("td")
    assert cells.nth(1).inner_text() == "alice"
    assert int(cells.nth(2).inner_text()) == 3  # three user messages on main
    assert int(cells.nth(3).inner_text().replace(",", "")) > 50  # tokens counted
    assert cells.nth(5).inner_text() == "2"  # main and retry
    assert row.locator("a.flag").inner_text() == "re ask"
    admin.screenshot(
        path=str(shots / "inspector-sessions.png"),
        clip={"x": 0, "y": 0, "width": 1200, "height": 300},
    )
    admin.fill("#user", "bob")
    admin.click("#search")
    assert admin.locator("tbody tr[data-session]").all_inner_texts()[0].startswith("billing-7")
    assert admin.locator(f"tr[data-session='{SESSION}']").count() == 0
    admin.goto("/ui?q=support")
    assert admin.locator("tbody tr[data-session]").count() == 1
    admin.goto("/ui?limit=1")  # newest first: billing-7 was created after support-1
    assert admin.locator("tbody tr[data-session]").get_attribute("data-session") == "billing-7"
    admin.click("#next-page")
    assert admin.locator("tbody tr[data-session]").get_attribute("data-session") == SESSION


def test_timeline_lanes_fork_summary_state_and_tools(
    admin: Page, server: Seeded, shots: Path
) -> None:
    admin.goto(f"/ui/s/{SESSION}")
    assert admin.locator("#lane-main").count() == 1
    assert "forked from main at seq 5" in admin.locator("#lane-retry").inner_text()
    assert admin.locator(".fork-point[data-fork='retry']").count() == 1
    summary = admin.locator("#e-main-8")
    assert "covers seqs 1\N{EN DASH}4" in summary.inner_text()
    assert "lookup_order" in admin.locator("#e-main-3").inner_text()
    assert "answers call_1" in admin.locator("#e-main-4").inner_text()
    assert admin.locator(".event.state").count() >= 3
    assert "replacement" in admin.locator("#e-retry-6").inner_text()
    seqs = [int(s) for s in admin.locator("td.seq").all_inner_texts() if s.isdigit()]
    assert seqs == sorted(seqs)
    admin.screenshot(path=str(shots / "inspector-timeline.png"))


def test_context_manifest_links_into_the_timeline(admin: Page, server: Seeded, shots: Path) -> None:
    admin.goto(f"/ui/s/{SESSION}/context?seq=9&budget=600")
    manifest = admin.locator("#manifest")
    assert "Context for message" in manifest.inner_text()
    assert admin.locator("#budget-bar .sec").count() >= 2
    assert "summary #8 covers #1\N{EN DASH}#4" in admin.locator("#m-summary").inner_text()
    verbatim = [int(s.lstrip("#")) for s in admin.locator("#m-verbatim a").all_inner_texts()]
    assert verbatim and all(s > 4 for s in verbatim)
    assert "tokens" in admin.locator("#m-prefix").inner_text()
    admin.screenshot(path=str(shots / "inspector-context.png"), full_page=True)
    target = verbatim[0]
    admin.locator(f"#m-verbatim a[data-seq='{target}']").click()
    admin.wait_for_url(re.compile(rf"/ui/s/{SESSION}\?focus={target}&lane=main#e-main-{target}$"))
    card = admin.locator(f"#e-main-{target}")
    assert card.is_visible()
    assert admin.locator("tr.focus").locator(f"#e-main-{target}").count() == 1


def test_build_for_a_new_message_stores_nothing(admin: Page, server: Seeded) -> None:
    head = server.call("GET", f"/v1/sessions/{SESSION}").headers["ETag"]
    admin.goto(f"/ui/s/{SESSION}/context")
    admin.fill("#new-message", "Can I change the delivery address?")
    admin.fill("#new-budget", "120")
    admin.click("#build-new")
    assert "Context for the new message" in admin.locator("#manifest").inner_text()
    assert "of 120 tokens" in admin.locator("#manifest h2").inner_text()
    assert server.call("GET", f"/v1/sessions/{SESSION}").headers["ETag"] == head


def test_state_facts_with_sources_and_corrections(admin: Page, server: Seeded, shots: Path) -> None:
    admin.goto(f"/ui/s/{SESSION}/state")
    account = admin.locator("tr[data-fact='account_number']")
    assert account.locator("td.value").inner_text() == "48213378"
    history = account.locator("td.history").inner_text()
    assert "48213377" in history and "correction" in history
    email = admin.locator("tr[data-fact='email']")
    assert email.locator("a.seq-link").first.inner_text() == "#6"
    assert "refund" in admin.locator("#commitments").inner_text()
    admin.screenshot(path=str(shots / "inspector-state.png"), full_page=True)
    email.locator("a.seq-link").first.click()
    admin.wait_for_url(re.compile(r"#e-main-6$"))
    assert "alice@example.com" in admin.locator("#e-main-6").inner_text()


def test_health_flags_evidence_and_chart(admin: Page, server: Seeded, shots: Path) -> None:
    admin.goto(f"/ui/s/{SESSION}/health")
    flag = admin.locator("tr[data-detector='re_ask']")
    assert flag.count() == 1
    assert "medium" in flag.inner_text()
    assert admin.locator("#health-chart polyline").count() == 1
    assert admin.locator("#health-chart circle").count() == 1
    assert float(admin.locator("#score").inner_text()) < 1.0
    admin.screenshot(path=str(shots / "inspector-health.png"), full_page=True)
    evidence = flag.locator("a.evidence")
    assert evidence.all_inner_texts() == ["#1", "#7"]
    evidence.first.click()
    admin.wait_for_url(re.compile(r"#e-main-1$"))
    assert "48213377" in admin.locator("#e-main-1").inner_text()


def test_live_stream_arrives_and_a_cut_answer_is_marked(
    admin: Page, server: Seeded, shots: Path
) -> None:
    server.call("POST", "/v1/sessions", json={"id": "live-1", "user_id": "alice"})
    admin.goto("/ui/s/live-1")
    assert admin.locator(".event").count() == 0
    server.fake.chunk_delay = 0.25
    words = " ".join(f"word{i}" for i in range(24))
    server.fake.set_reply(words)
    done: list[httpx.Response] = []
    body = {"model": "gpt-4o", "session_id": "live-1", "stream": True,
            "messages": [{"role": "user", "content": "Tell me a long story"}]}  # fmt: skip

    def chat() -> None:
        with httpx.Client(base_url=server.base_url, timeout=60) as client:
            done.append(client.post("/v1/chat/completions", json=body, headers=server.auth()))

    thread = threading.Thread(target=chat)
    thread.start()
    try:
        pending = admin.locator("#pending-main[data-status='streaming']")
        pending.wait_for()
        assert "word0" in pending.inner_text()
        admin.screenshot(path=str(shots / "inspector-live.png"))
        admin.locator("#e-main-2").wait_for(timeout=30_000)  # the stored answer
        assert "word23" in admin.locator("#e-main-2").inner_text()
        assert admin.locator("#pending-main").count() == 0
    finally:
        thread.join(60)
        server.fake.chunk_delay = 0.0
    assert done and done[0].status_code == 200

    # A cancelled answer is stored cut short, and marked so.
    rids: list[str] = []
    body["messages"] = [{"role": "user", "content": "And another one?"}]

    def chat_streaming() -> None:
        with (
            httpx.Client(base_url=server.base_url, timeout=60) as client,
            client.stream("POST", "/v1/chat/completions", json=body, headers=server.auth()) as r,
        ):
            rids.append(r.headers["x-response-id"])
            for _ in r.iter_bytes():
                pass

    server.fake.chunk_delay = 0.25
    thread = threading.Thread(target=chat_streaming)
    thread.start()
    try:
        admin.locator("#pending-main[data-status='streaming']").wait_for()
        server.call("POST", f"/v1/responses/{rids[0]}/cancel")
        cut = admin.locator("#e-main-4")
        cut.wait_for(timeout=30_000)
    finally:
        thread.join(60)
        server.fake.chunk_delay = 0.0
    assert "partial" in (cut.get_attribute("class") or "")
    assert cut.locator(".badge.warn").inner_text() == "cancelled"
    assert "word0" in cut.inner_text()


def test_another_tenant_sees_none_of_it(browser: Browser, server: Seeded, offline: Offline) -> None:
    page = _page(browser, server, offline, "other")
    try:
        assert page.locator("tbody tr[data-session]").count() == 0
        assert SESSION not in page.content()
        for path in ("", "/context", "/state", "/health", "/live"):
            response = page.goto(f"/ui/s/{SESSION}{path}")
            assert response is not None and response.status == 404, path
            assert "alice" not in page.content() and "48213377" not in page.content()
        page.goto(f"/ui?q={SESSION}")
        assert page.locator("tbody tr[data-session]").count() == 0
    finally:
        page.context.close()
    assert offline.outside == []


def test_writes_need_the_write_scope_and_a_confirmation(
    browser: Browser, server: Seeded, offline: Offline
) -> None:
    server.call("POST", "/v1/sessions", json={"id": "doomed", "user_id": "carol"})
    hello = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    server.call("POST", "/v1/sessions/doomed/events", json={"events": hello})
    reader = _page(browser, server, offline, "reader")
    try:
        reader.goto("/ui/s/doomed")
        assert reader.locator("#delete-session").count() == 0
        assert reader.locator(".fork-link").count() == 0
        response = reader.goto("/ui/s/doomed/delete")
        assert response is not None and response.status == 403
    finally:
        reader.context.close()

    writer = _page(browser, server, offline, "writer")
    try:
        writer.goto("/ui/s/doomed")
        writer.locator("#e-main-1 .fork-link").click()
        writer.fill("#branch-name", "alt")
        writer.click("#confirm-fork")
        writer.locator("#lane-alt").wait_for()
        branches = server.call("GET", "/v1/sessions/doomed/branches").json()["data"]
        assert {b["name"]: b["fork_seq"] for b in branches}["alt"] == 1

        writer.click("#delete-session")
        writer.fill("#confirm", "wrong-id")
        writer.click("#confirm-delete")
        assert "type the session id" in writer.content()
        server.call("GET", "/v1/sessions/doomed")  # still there
        writer.goto("/ui/s/doomed/delete")
        writer.fill("#confirm", "doomed")
        writer.click("#confirm-delete")
        writer.locator("#deleted-notice").wait_for()
    finally:
        writer.context.close()
    gone = server.http.get("/v1/sessions/doomed", headers=server.auth())
    assert gone.status_code == 404
    assert offline.outside == []


def test_api_docs_render_offline(browser: Browser, server: Seeded, offline: Offline) -> None:
    page = _page(browser, server, offline, None)
    try:
        page.goto("/docs")
        page.locator(".opblock").first.wait_for()
        assert page.locator(".opblock").count() > 10
        assert "chatstate" in page.locator(".title").first.inner_text()
    finally:
        page.context.close()
    assert offline.outside == []
