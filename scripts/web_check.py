"""The dashboard in a real browser (Debian's Chromium, driven by Playwright), as a newcomer
uses it: sign up, create an API key, run a job through the API with the official OpenAI SDK,
find the job in the log, read its transcript, rate it, and see the totals change. Every page
is screenshotted into GAVEL_SCREENSHOTS and checked with axe-core (no serious or critical
violation). Tab order is checked too: every control is reachable by keyboard and labelled.

Run by server/tests/api/browser.rs, which starts Gavel and an agent and checks what this
prints (one JSON object) against the ledger. Then the agents' owner logs in and finds the win
in their earnings and the rating on their agent, and pauses another agent; and a caller with
a finished batch opens its page. Environment: GAVEL_URL, GAVEL_SCREENSHOTS, GAVEL_AXE (path of
axe.min.js), GAVEL_OWNER_EMAIL and GAVEL_OWNER_PASSWORD, GAVEL_BATCHER_EMAIL and
GAVEL_BATCHER_PASSWORD, GAVEL_CHROMIUM (default /usr/bin/chromium).
"""

import json
import os
import sys

from openai import OpenAI
from playwright.sync_api import sync_playwright

BASE = os.environ["GAVEL_URL"]
SHOTS = os.environ["GAVEL_SCREENSHOTS"]
AXE = os.environ["GAVEL_AXE"]
CHROMIUM = os.environ.get("GAVEL_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

report = {"pages": {}, "violations": []}


def check(page, name):
    """Screenshot the page, run axe-core on it, and walk its tab order."""
    page.screenshot(path=os.path.join(SHOTS, f"{name}.png"), full_page=True)
    page.add_script_tag(path=AXE)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    serious = [
        {"page": name, "id": v["id"], "impact": v["impact"], "help": v["help"],
         "nodes": [n["html"] for n in v["nodes"]][:3]}
        for v in result["violations"] if v["impact"] in ("serious", "critical")
    ]
    report["violations"].extend(serious)
    # Tab through the page: every focusable control must be reached, and have a name.
    focusable = "a[href], button, input:not([type=hidden]), select, summary"
    controls = page.evaluate(
        f"() => [...document.querySelectorAll('{focusable}')].filter(e => !e.disabled).length"
    )
    page.locator("body").focus()
    for _ in range(controls + 2):
        page.keyboard.press("Tab")
        info = page.evaluate(
            """() => { const e = document.activeElement; if (!e || e === document.body) return null;
                 e.setAttribute('data-tab-seen', '1');
                 const label = e.labels && e.labels.length ? e.labels[0].innerText
                   : (e.getAttribute('aria-label') || e.innerText || e.value || '');
                 return [e.outerHTML.slice(0, 80), label.trim()]; }"""
        )
        if info and not info[1]:
            report["violations"].append({"page": name, "id": "unlabelled-control", "nodes": [info[0]]})
    reached = page.evaluate(
        f"() => [...document.querySelectorAll('{focusable}')].filter(e => e.hasAttribute('data-tab-seen')).length"
    )
    report["pages"][name] = {"controls": controls, "reached_by_tab": reached}


def log_in(browser, email, password):
    """A new browser context, logged in as email; its page."""
    page = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{BASE}/login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.click("button[type=submit]:has-text('Log in')")
    page.wait_for_url(f"{BASE}/")
    return page


def text(page, selector):
    return page.locator(selector).inner_text().strip()


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    # axe-core is injected as a script; the page's own CSP (no script at all) would refuse it.
    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()

    page.goto(f"{BASE}/")
    assert page.url.endswith("/login"), page.url
    check(page, "login")
    page.click("text=Create an account")
    check(page, "signup")
    page.fill("#email", "newcomer@example.com")
    page.fill("#password", "short")
    page.click("button[type=submit]:has-text('Sign up')")
    # The browser's own check (minlength) stops a short password before it is sent.
    assert page.url.endswith("/signup"), page.url
    page.fill("#password", "correct horse battery staple")
    page.fill("#handle", "newcomer")
    page.click("button[type=submit]:has-text('Sign up')")
    page.wait_for_url(f"{BASE}/")
    report["available_before"] = text(page, "#available")
    check(page, "dashboard-empty")

    page.fill("#key-name", "laptop")
    page.click("button:has-text('Create key')")
    key = page.input_value("#new-key")
    assert key.startswith("gvl_"), key
    check(page, "dashboard-new-key")

    client = OpenAI(base_url=f"{BASE}/v1", api_key=key)
    completion = client.chat.completions.create(
        model="auction", messages=[{"role": "user", "content": "Say hello"}]
    )
    job_id = completion.id.removeprefix("gen-")
    report["job_id"] = job_id
    report["answer"] = completion.choices[0].message.content

    # The marketplace: the agents on offer, and a recommendation from the "try it" box.
    page.click("nav >> text=Marketplace")
    page.wait_for_url(f"{BASE}/market")
    page.fill("#prompt", "Say hello")
    page.click("button:has-text('Run the auction')")
    page.wait_for_url(f"{BASE}/market/try")
    report["shortlist"] = page.locator("#shortlist tbody tr").all_inner_texts()
    check(page, "market")

    page.goto(f"{BASE}/")
    report["available_after"] = text(page, "#available")
    report["spent_total"] = text(page, "#spent-total")
    # The key's row: the job run with it, delivered, and what it cost.
    report["key_rows"] = page.locator("#keys tbody tr").all_inner_texts()
    check(page, "dashboard")
    page.click("text=Per hour")
    page.wait_for_url(f"{BASE}/?by=hour")
    report["spent_total_hourly"] = text(page, "#spent-total")
    check(page, "dashboard-hourly")

    page.click("nav >> text=Jobs")
    page.select_option("#status", "delivered")
    page.click("button:has-text('Filter')")
    assert "status=delivered" in page.url, page.url
    check(page, "jobs")
    page.click(f"a:has-text('{job_id}')")
    page.wait_for_url(f"{BASE}/jobs/{job_id}")
    report["winner"] = text(page, "#winner")
    report["clearing_price"] = text(page, "#clearing-price")
    report["total_cost"] = text(page, "#total-cost")
    report["candidates"] = page.locator("#candidates tbody tr").count()
    report["attempts"] = page.locator("#attempts tbody tr").count()
    check(page, "job")
    page.fill("#reason", "quick and right")
    page.click("button:has-text('Good result')")
    page.wait_for_url(f"{BASE}/jobs/{job_id}")
    report["rating"] = text(page, "#rating")
    check(page, "job-rated")

    page.click("button:has-text('Log out')")
    page.wait_for_url(f"{BASE}/login")
    page.goto(f"{BASE}/jobs/{job_id}")
    report["after_logout"] = page.url

    # The agents' owner logs in: the win is in their earnings, the rating on their agent.
    owner = log_in(browser, os.environ["GAVEL_OWNER_EMAIL"], os.environ["GAVEL_OWNER_PASSWORD"])
    report["owner_earned_total"] = text(owner, "#earned-total")
    check(owner, "owner-dashboard")
    owner.click("nav >> text=My agents")
    report["owner_agents"] = owner.locator("#agents tbody tr").all_inner_texts()
    check(owner, "owner-agents")
    owner.click("button[aria-label$='/dearer']")
    owner.wait_for_url(f"{BASE}/agents")
    report["owner_agents_after_pause"] = owner.locator("#agents tbody tr").all_inner_texts()
    # The owner registers a third agent through the form: the egress guard's refusal is shown
    # at the endpoint field, then the agent is registered.
    owner.click("text=Register an agent")
    owner.wait_for_url(f"{BASE}/agents/new")
    check(owner, "agent-new")
    owner.fill("#name", "formed")
    owner.fill("#categories", "chat")
    owner.fill("#endpoint", "http://169.254.169.254/latest")
    owner.fill("#upstream_model", "small-1")
    owner.fill("#per_call", "0.5")
    owner.click("button[type=submit]:has-text('Register')")
    report["register_refusal"] = text(owner, "#endpoint-error")
    check(owner, "agent-new-refused")
    owner.fill("#endpoint", os.environ["GAVEL_FORM_AGENT_URL"])
    owner.click("button[type=submit]:has-text('Register')")
    owner.wait_for_url(f"{BASE}/agents")
    report["owner_agents_after_register"] = owner.locator("#agents tbody tr").all_inner_texts()
    # ... and edits it: a new price, saved, is its second price version.
    owner.click("a[aria-label$='/formed']:has-text('Edit')")
    owner.wait_for_url("**/edit")
    check(owner, "agent-edit")
    owner.fill("#per_call", "0.6")
    owner.click("button[type=submit]:has-text('Save changes')")
    owner.wait_for_url(f"{BASE}/agents")
    report["owner_agents_after_edit"] = owner.locator("#agents tbody tr").all_inner_texts()

    # The owner is also the operator (admin.emails): the operator's page.
    owner.click("nav >> text=Operator")
    owner.wait_for_url(f"{BASE}/operator")
    report["operator_fees_total"] = text(owner, "#fees-total")
    check(owner, "operator")

    # A caller with a finished batch: the list, the batch's page.
    batcher = log_in(browser, os.environ["GAVEL_BATCHER_EMAIL"], os.environ["GAVEL_BATCHER_PASSWORD"])
    batcher.click("nav >> text=Batches")
    batcher.wait_for_url(f"{BASE}/batches")
    check(batcher, "batches")
    batcher.click("#batches a")
    batcher.wait_for_url("**/batches/*")
    report["batch_status"] = text(batcher, "#status")
    report["batch_completed"] = text(batcher, "#completed")
    check(batcher, "batch")
    browser.close()

json.dump(report, sys.stdout)
