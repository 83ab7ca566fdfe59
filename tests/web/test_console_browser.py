"""The reviewer console in real Chromium: sign-in, the live queue, decisions, edits, the
keyboard, agent markup, tenant walls. Elements are found by role and accessible name."""

from __future__ import annotations

import re
from typing import Any

import anyio
import pytest

from colaflow_mcp.hub.protocol import RS
from tests.harness import Harness
from tests.hub.hubwire import open_ws
from tests.netproxy import TcpProxy
from tests.web.console import login_url, signed_in_page

pytestmark = pytest.mark.anyio

ISSUE = {"project_key": "WEB", "title": "Fix the login page"}


async def _agent(h: Harness, tenant: str = "acme") -> str:
    await h.project(tenant)
    return await h.agent_key(tenant, name="triage-bot")


def _expect() -> Any:
    from playwright.async_api import expect
    return expect


async def test_login_link_lands_on_inbox_once_and_sets_a_strict_cookie(
        server: Harness, browser: Any) -> None:
    expect = _expect()
    link = await login_url(server)
    context = await browser.new_context()
    page = await context.new_page()
    response = await page.goto(link)
    assert response is not None and response.status == 200
    assert page.url == f"{server.base_url}/inbox"  # no secret left in the address
    await expect(page.get_by_role("button", name="Log out")).to_be_visible()
    [cookie] = await context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"]) == (True, "Strict", False)
    assert cookie["path"] == "/inbox"

    other = await (await browser.new_context()).new_page()
    again = await other.goto(link)
    assert again is not None and again.status == 403
    await expect(other.get_by_text("already been used or has expired")).to_be_visible()
    assert await other.context.cookies() == []
    await other.goto(f"{server.base_url}/inbox")
    await expect(other.get_by_text("You are not signed in")).to_be_visible()


async def test_expired_link_is_refused(server: Harness, browser: Any) -> None:
    expect = _expect()
    page = await (await browser.new_context()).new_page()
    # A link whose life ended: expired by the database clock, not by waiting.
    link = await login_url(server, minutes=1e-9)
    response = await page.goto(link)
    assert response is not None and response.status == 403
    await expect(page.get_by_text("already been used or has expired")).to_be_visible()
    assert await page.context.cookies() == []


async def test_log_out_ends_the_session_on_the_server(server: Harness, browser: Any) -> None:
    expect = _expect()
    page = await signed_in_page(browser, server)
    [cookie] = await page.context.cookies()
    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_role("heading", name="Logged out")).to_be_visible()
    assert await page.context.cookies() == []
    # The old cookie value, replayed, no longer works.
    r = await server.client.get("/inbox/api/changes",
                                headers={"Cookie": f"{cookie['name']}={cookie['value']}"})
    assert r.status_code == 401


async def test_proposals_arrive_and_decided_ones_leave_without_reload(
        server: Harness, browser: Any) -> None:
    expect = _expect()
    key = await _agent(server)
    page = await signed_in_page(browser, server)
    queue = page.get_by_role("list", name="Pending changes")
    await expect(queue.get_by_role("listitem")).to_have_count(0)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    change = await server.propose(key, arguments={**ISSUE, "title": "Arrives live"})
    item = queue.get_by_role("listitem").filter(has_text="Arrives live")
    await expect(item).to_be_visible()
    await expect(item).to_contain_text("create_issue · triage-bot")

    token = await server.reviewer_token(user="bob")
    assert (await server.reject(token, change["id"], "not now")).status_code == 200
    await expect(item).to_have_count(0)
    assert navigations == []  # no reload


async def test_queue_shows_offline_and_resyncs_after_reconnect(
        server: Harness, browser: Any) -> None:
    expect = _expect()
    key = await _agent(server)
    proxy = TcpProxy("127.0.0.1", server.port)
    async with anyio.create_task_group() as tg:
        port = await tg.start(proxy.run)
        base = f"http://127.0.0.1:{port}"
        page = await signed_in_page(browser, server, base=base)
        live = page.locator("#live")
        proxy.cut()
        await expect(live).to_have_text(re.compile("Offline"))
        missed = await server.propose(key, arguments={**ISSUE, "title": "Proposed offline"})
        proxy.restore()
        await expect(live).to_have_text("Live", timeout=15_000)
        queue = page.get_by_role("list", name="Pending changes")
        await expect(queue.get_by_role("listitem").filter(has_text="Proposed offline")
                     ).to_be_visible()
        assert missed["status"] == "Pending"
        await page.context.close()
        tg.cancel_scope.cancel()


async def test_change_shows_agent_rationale_countdown_and_diff(
        server: Harness, browser: Any) -> None:
    expect = _expect()
    key = await _agent(server)
    r = await server.client.post("/api/mcp/pending-changes", json={
        "tool": "create_issue", "arguments": {**ISSUE, "priority": "High"},
        "rationale": "The login page 500s for SSO users."},
        headers={"Authorization": f"Bearer {key}"})
    change = r.json()
    page = await signed_in_page(browser, server)
    await page.get_by_role("link", name="Create task in WEB: 'Fix the login page'").click()
    await expect(page).to_have_url(f"{server.base_url}/inbox/changes/{change['id']}")
    await expect(page.get_by_text("The login page 500s for SSO users.")).to_be_visible()
    await expect(page.locator(".facts")).to_contain_text("triage-bot")
    await expect(page.locator(".facts")).to_contain_text("create_issue")
    await expect(page.locator(".countdown")).to_have_text(re.compile(r"^in 23h 59m \d+s$"))
    diff = page.get_by_role("table")
    await expect(diff.get_by_role("row", name=re.compile("^title"))).to_contain_text(
        "Fix the login page")
    await expect(diff.get_by_role("row", name=re.compile("^priority"))).to_contain_text("High")
    # The page's own icon is served too (a browser asked for /favicon.ico and got 404).
    async with page.expect_response(lambda r: "favicon" in r.url) as icon:
        await page.reload()
    answer = await icon.value
    assert answer.url.endswith("/inbox/static/favicon.svg") and answer.status == 200


async def test_update_diff_shows_only_changed_fields_and_delete_what_disappears(
        server: Harness, browser: Any) -> None:
    expect = _expect()
    key = await _agent(server)
    created = await server.propose(key)
    token = await server.reviewer_token()
    assert (await server.approve(token, created["id"])).status_code == 200
    update = await server.propose(key, "update_issue",
                                  {"issue_key": "WEB-1", "priority": "Critical"})
    delete = await server.propose(key, "delete_issue", {"issue_key": "WEB-1"})
    page = await signed_in_page(browser, server)
    await page.goto(f"{server.base_url}/inbox/changes/{update['id']}")
    rows = page.get_by_role("table").get_by_role("row")
    await expect(rows).to_have_count(2)  # the header and the one changed field
    await expect(rows.nth(1)).to_have_text(re.compile("priority\\s*Medium\\s*Critical"))
    await page.goto(f"{server.base_url}/inbox/changes/{delete['id']}")
    await expect(page.get_by_role("table")).to_contain_text("(removed)")
    await expect(page.get_by_role("row", name=re.compile("^title"))).to_contain_text(
        "Fix the login page")


async def test_approve_in_the_browser_reaches_the_agent_on_the_hub(
        server: Harness, browser: Any) -> None:
    expect = _expect()
    key = await _agent(server)
    change = await server.propose(key)
    ws = await open_ws(server.base_url.replace("http", "ws") + "/hubs/mcp", key)
    try:
        done = await ws.invoke("SubscribeToPendingChange", change["id"])
        assert done["result"]["status"] == "Pending"
        page = await signed_in_page(browser, server)
        await page.goto(f"{server.base_url}/inbox/changes/{change['id']}")
        await page.get_by_role("button", name="Approve", exact=True).click()
        await expect(page.locator("#change-status")).to_have_text("Approved by alice")
        await expect(page.get_by_role("alert")).to_contain_text("executed (")
        event = await ws.drain_until(lambda m: m.get("target") == "PendingChangeApproved")
        payload = event["arguments"][0]
        assert (payload["pendingChangeId"], payload["approvedBy"]) == (change["id"], "alice")
        assert payload["executionResult"]["success"] is True
        await expect(page.get_by_role("button", name="Approve", exact=True)).to_be_disabled()
    finally:
        await ws.ws.close()
    assert RS  # the hub's framing module is the one the helper speaks


async def test_reject_requires_a_reason(server: Harness, browser: Any) -> None:
    expect = _expect()
    key = await _agent(server)
    change = await server.propose(key)
    page = await signed_in_page(browser, server)
    await page.goto(f"{server.base_url}/inbox/changes/{change['id']}")
    await page.get_by_role("button", name="Reject").click()
    await expect(page.get_by_text("A reason is required to reject.")).to_be_visible()
    await expect(page.get_by_role("textbox", name="Reason")).to_be_focused()
    r = await server.client.get(f"/api/mcp/pending-changes/{change['id']}",
                                headers={"Authorization": f"Bearer {key}"})
    assert r.json()["status"] == "Pending"
    await page.get_by_role("textbox", name="Reason").fill("Duplicate of WEB-7")
    await page.get_by_role("button", name="Reject").click()
    await expect(page.locator("#change-status")).to_have_text("Rejected by alice")
    r = await server.client.get(f"/api/mcp/pending-changes/{change['id']}",
                                headers={"Authorization": f"Bearer {key}"})
    assert (r.json()["status"], r.json()["reason"]) == ("Rejected", "Duplicate of WEB-7")


async def test_edit_validates_then_save_and_approve_applies_the_edit(
        server: Harness, browser: Any) -> None:
    expect = _expect()
    key = await _agent(server)
    change = await server.propose(key)
    page = await signed_in_page(browser, server)
    await page.goto(f"{server.base_url}/inbox/changes/{change['id']}")
    await page.get_by_role("button", name="Edit").click()
    title = page.get_by_role("textbox", name="Title (required)")
    await expect(title).to_have_value("Fix the login page")  # pre-filled
    await title.fill("")
    await page.get_by_role("button", name="Save and approve").click()
    await expect(page.locator("#arg-err-title")).to_contain_text("at least 1 character")
    await expect(title).to_have_attribute("aria-invalid", "true")
    agent = {"Authorization": f"Bearer {key}"}
    r = await server.client.get(f"/api/mcp/pending-changes/{change['id']}", headers=agent)
    assert r.json()["status"] == "Pending"

    await title.fill("Fix the SSO login page")
    await page.get_by_role("combobox", name="Priority").select_option("Critical")
    await page.get_by_role("button", name="Save and approve").click()
    await expect(page.locator("#change-status")).to_have_text("Approved by alice")
    await expect(page.get_by_role("alert")).to_contain_text("Approved with your edits")
    # The page now shows what was applied, as a reload would: the edited title in the
    # heading and the diff, the decision and the execution in the facts and the audit trail.
    await expect(page.get_by_role("heading", level=2)).to_contain_text("Fix the SSO login page")
    await expect(page.get_by_role("row", name=re.compile("^title"))).to_contain_text(
        "Fix the SSO login page")
    await expect(page.locator("dl.facts")).to_contain_text("by alice before approval")
    audit = page.get_by_role("region", name="Audit trail")
    await expect(audit).to_contain_text("change.approved by alice")
    await expect(audit).to_contain_text("change.executed")
    await expect(page.get_by_role("button", name="Save and approve")).to_be_hidden()
    got = (await server.client.get(f"/api/mcp/pending-changes/{change['id']}",
                                   headers=agent)).json()
    assert got["edited"] is True and got["editedBy"] == "alice"
    assert (got["arguments"]["title"], got["arguments"]["priority"]) == (
        "Fix the SSO login page", "Critical")
    assert got["proposedArguments"]["title"] == "Fix the login page"
    issue = (await server.client.get("/api/issues/WEB-1", headers=agent)).json()
    assert (issue["title"], issue["priority"]) == ("Fix the SSO login page", "Critical")


async def test_the_approve_key_does_not_drop_an_unsaved_edit(
        server: Harness, browser: Any) -> None:
    # "a" with the edit form changed would approve the proposal as it was: it says so and
    # moves to Save and approve, which applies the edit.
    expect = _expect()
    key = await _agent(server)
    change = await server.propose(key)
    page = await signed_in_page(browser, server)
    await page.goto(f"{server.base_url}/inbox/changes/{change['id']}")
    await expect(page.locator("#live")).to_have_text("Live")  # the script is running
    await page.keyboard.press("e")
    title = page.get_by_role("textbox", name="Title (required)")
    await title.fill("Fix the SSO login page")
    await page.get_by_role("heading", level=2).click()  # focus out of the field
    await page.keyboard.press("a")
    await expect(page.get_by_role("alert")).to_contain_text("Your edit is not saved")
    save = page.get_by_role("button", name="Save and approve")
    await expect(save).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#change-status")).to_have_text("Approved by alice")
    agent = {"Authorization": f"Bearer {key}"}
    got = (await server.client.get(f"/api/mcp/pending-changes/{change['id']}",
                                   headers=agent)).json()
    assert (got["edited"], got["arguments"]["title"]) == (True, "Fix the SSO login page")


async def test_change_decided_elsewhere_shows_its_status_and_disables_actions(
        server: Harness, browser: Any) -> None:
    expect = _expect()
    key = await _agent(server)
    change = await server.propose(key)
    page = await signed_in_page(browser, server)
    await page.goto(f"{server.base_url}/inbox/changes/{change['id']}")
    await expect(page.locator("#live")).to_have_text("Live")
    token = await server.reviewer_token(user="bob")
    assert (await server.reject(token, change["id"], "bob says no")).status_code == 200
    await expect(page.locator("#change-status")).to_have_text(
        "Rejected by bob (decided elsewhere)")
    for name in ("Approve", "Reject", "Edit"):
        await expect(page.get_by_role("button", name=name, exact=True)).to_be_disabled()
    await expect(page.get_by_role("alert")).to_contain_text("rejected elsewhere by bob")
    # The decision's facts and audit entry appear without a reload.
    await expect(page.locator("dl.facts")).to_contain_text("bob says no")
    await expect(page.get_by_role("region", name="Audit trail")).to_contain_text(
        "change.rejected by bob")


async def test_agent_markup_is_shown_as_text_and_never_runs(
        server: Harness, browser: Any) -> None:
    expect = _expect()
    key = await _agent(server)
    script = "<script>window.__pwned = 1; alert(1)</script>"
    img = '<img src=x onerror="window.__pwned = 2; alert(2)">'
    first = await server.propose(key, arguments={**ISSUE, "title": script})
    r = await server.client.post("/api/mcp/pending-changes", json={
        "tool": "create_issue", "arguments": {**ISSUE, "title": img, "description": img},
        "rationale": script}, headers={"Authorization": f"Bearer {key}"})
    second = r.json()
    dialogs: list[str] = []
    page = await signed_in_page(browser, server)
    page.on("dialog", lambda d: dialogs.append(d.message))
    queue = page.get_by_role("list", name="Pending changes")
    await expect(queue.get_by_role("listitem").filter(has_text=script)).to_be_visible()
    await expect(queue.get_by_role("listitem").filter(has_text=img)).to_be_visible()
    # A third arrives live (rendered by the script, not the template).
    await server.propose(key, arguments={**ISSUE, "title": img + " live"})
    await expect(queue.get_by_role("listitem").filter(has_text=img + " live")).to_be_visible()
    for change in (first, second):
        await page.goto(f"{server.base_url}/inbox/changes/{change['id']}")
        await expect(page.get_by_role("heading", level=2)).to_contain_text("<")
    await expect(page.get_by_text(script, exact=True)).to_be_visible()  # the rationale
    assert await page.evaluate("window.__pwned === undefined")
    assert await page.locator("img").count() == 0
    assert dialogs == []


async def test_keyboard_only_review(server: Harness, browser: Any) -> None:
    expect = _expect()
    key = await _agent(server)
    for title in ("Third", "Second", "First"):  # newest first in the queue: First
        await server.propose(key, arguments={**ISSUE, "title": title})
    page = await signed_in_page(browser, server)
    status = page.locator("#change-status")

    await page.keyboard.press("j")
    await expect(page.get_by_role("heading", level=2)).to_contain_text("First")
    await expect(page.locator("#live")).to_have_text("Live")  # the script is running
    await page.keyboard.press("a")
    await expect(status).to_have_text("Approved by alice")

    await page.keyboard.press("j")
    await expect(page.get_by_role("heading", level=2)).to_contain_text("Second")
    await expect(page.locator("#live")).to_have_text("Live")  # the script is running
    await page.keyboard.press("r")
    await expect(page.get_by_role("textbox", name="Reason")).to_be_focused()
    await page.keyboard.type("Not this sprint")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Reject")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(status).to_have_text("Rejected by alice")

    await page.keyboard.press("j")
    await expect(page.get_by_role("heading", level=2)).to_contain_text("Third")
    await expect(page.locator("#live")).to_have_text("Live")  # the script is running
    await page.keyboard.press("e")
    field = page.get_by_role("textbox", name="Project Key (required)")
    await expect(field).to_be_focused()
    await page.keyboard.press("Tab")
    await page.keyboard.press("ControlOrMeta+a")
    await page.keyboard.type("Third, edited")
    await page.keyboard.press("Enter")  # submits the form: Save and approve
    await expect(status).to_have_text("Approved by alice")

    await page.keyboard.press("?")
    await expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.get_by_role("dialog", name="Keyboard shortcuts")).to_be_hidden()
    agent = {"Authorization": f"Bearer {key}"}
    items = (await server.client.get("/api/mcp/pending-changes", headers=agent)).json()["items"]
    by_title = {c["proposedArguments"]["title"]: c for c in items}
    assert by_title["First"]["status"] == "Approved"
    assert (by_title["Second"]["status"], by_title["Second"]["reason"]) == (
        "Rejected", "Not this sprint")
    assert by_title["Third"]["arguments"]["title"] == "Third, edited"


async def test_two_tenants_side_by_side_see_only_their_own(
        server: Harness, browser: Any) -> None:
    expect = _expect()
    acme_key = await _agent(server, "acme")
    globex_key = await _agent(server, "globex")
    acme = await signed_in_page(browser, server, "acme", "alice")
    globex = await signed_in_page(browser, server, "globex", "gina")
    acme_queue = acme.get_by_role("list", name="Pending changes")
    globex_queue = globex.get_by_role("list", name="Pending changes")

    change = await server.propose(acme_key, arguments={**ISSUE, "title": "Acme only"})
    await server.propose(globex_key, arguments={**ISSUE, "title": "Globex only"})
    await expect(acme_queue.get_by_role("listitem")).to_have_text([re.compile("Acme only")])
    await expect(globex_queue.get_by_role("listitem")).to_have_text([re.compile("Globex only")])

    r = await globex.goto(f"{server.base_url}/inbox/changes/{change['id']}")
    assert r is not None and r.status == 404
    csrf = await globex.locator('meta[name="csrf-token"]').get_attribute("content")
    api = await globex.request.post(
        f"{server.base_url}/inbox/api/changes/{change['id']}/approve",
        headers={"X-CSRF-Token": csrf or ""}, data={})
    assert api.status == 404
    await expect(acme_queue.get_by_role("listitem")).to_have_count(1)


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
async def test_usable_at_desktop_and_phone_width(server: Harness, browser: Any,
                                                 width: int, height: int) -> None:
    expect = _expect()
    key = await _agent(server)
    change = await server.propose(key)
    page = await signed_in_page(browser, server, viewport={"width": width, "height": height})
    await page.goto(f"{server.base_url}/inbox/changes/{change['id']}")
    for name in ("Approve", "Edit", "Reject", "Log out"):
        button = page.get_by_role("button", name=name, exact=True)
        await button.scroll_into_view_if_needed()
        await expect(button).to_be_in_viewport()
    # Nothing wider than the screen: no sideways scrolling.
    assert await page.evaluate("document.documentElement.scrollWidth") <= width


async def test_a_lost_race_is_explained_in_words(server: Harness, browser: Any) -> None:
    expect = _expect()
    key = await _agent(server)
    change = await server.propose(key)
    page = await signed_in_page(browser, server)
    # No live stream on this page: the page cannot know the change was decided meanwhile.
    await page.route("**/inbox/api/events", lambda route: route.abort())
    await page.goto(f"{server.base_url}/inbox/changes/{change['id']}")
    await expect(page.locator("#live")).to_have_text(re.compile("Offline"))
    token = await server.reviewer_token(user="bob")
    assert (await server.reject(token, change["id"], "bob was first")).status_code == 200
    await page.get_by_role("button", name="Approve", exact=True).click()
    await expect(page.get_by_role("alert")).to_have_text(
        "Nothing was done: this change is already Rejected, decided elsewhere (another "
        "reviewer, the CLI, or its expiry) while you had it open.")
    await expect(page.locator("#change-status")).to_have_text("Rejected (decided elsewhere)")
    await expect(page.get_by_role("button", name="Approve", exact=True)).to_be_disabled()


async def test_history_lists_decisions_with_who_edits_results_and_audit(
        server: Harness, browser: Any) -> None:
    expect = _expect()
    key = await _agent(server)
    approved = await server.propose(key, arguments={**ISSUE, "title": "Approved one"})
    rejected = await server.propose(key, arguments={**ISSUE, "title": "Rejected one"})
    page = await signed_in_page(browser, server)
    await page.goto(f"{server.base_url}/inbox/changes/{approved['id']}")
    await page.get_by_role("button", name="Edit").click()
    await page.get_by_role("textbox", name="Title (required)").fill("Approved, edited")
    await page.get_by_role("button", name="Save and approve").click()
    await expect(page.locator("#change-status")).to_have_text("Approved by alice")
    token = await server.reviewer_token(user="bob")
    assert (await server.reject(token, rejected["id"], "not needed")).status_code == 200

    await page.get_by_role("link", name="History").click()
    decided = page.get_by_role("list", name="Decided changes").get_by_role("listitem")
    await expect(decided).to_have_count(2)
    await expect(decided.nth(0)).to_contain_text("Rejected")
    await expect(decided.nth(0)).to_contain_text("by bob")
    await expect(decided.nth(0)).to_contain_text("Reason: not needed")
    await expect(decided.nth(1)).to_contain_text("Approved")
    await expect(decided.nth(1)).to_contain_text("edited by alice")
    await expect(decided.nth(1)).to_contain_text("executed")
    await decided.nth(1).get_by_role("link").click()
    trail = page.get_by_role("region", name="Audit trail").get_by_role("listitem")
    await expect(trail).to_have_count(3)
    await expect(trail.nth(1)).to_contain_text("change.approved by alice (reviewer) (edited)")
    await expect(trail.nth(2)).to_contain_text("change.executed by alice (reviewer): success")
