#!/usr/bin/env python3
"""Browser checks of Periscope's web UI, in Debian's Chromium driven by Playwright.

Run by tests/web.rs, one scenario per call:

    ui_checks.py SCENARIO --url http://127.0.0.1:PORT/?token=T --proxy PORT
                 [--origin URL] [--cacert FILE] [--renegotiated URL]

Each check prints `ok: what` when it holds; the first that does not raises, and the
script exits non-zero with the reason (and a screenshot in --shots). Figures of the
`big` scenario are printed as one line `figures: {json}`.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("PERISCOPE_TEST_CHROMIUM", "/usr/bin/chromium")
WAIT_MS = 20_000


def ok(what):
    print(f"ok: {what}", flush=True)


def wait_js(page, expression, arg=None, timeout=WAIT_MS):
    """Polls a JavaScript expression until it is true. (Playwright's
    wait_for_function compiles its predicate with eval, which the UI's CSP forbids.)"""
    deadline = time.time() + timeout / 1000
    while True:
        value = page.evaluate(expression, arg)
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    ok(what)


class Ui:
    def __init__(self, args, page):
        self.args = args
        self.page = page
        self.base, _, self.token = args.url.partition("/?token=")

    def open(self):
        self.page.goto(self.args.url)
        self.page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)

    def curl(self, path_or_url, *extra, background=False):
        """curl through the proxy; the output is the response body."""
        url = path_or_url if "://" in path_or_url else self.args.origin + path_or_url
        command = ["curl", "-s", "-S", "--max-time", "30", "-x", f"http://127.0.0.1:{self.args.proxy}",
                   "-w", "\n%{http_code}"]
        if self.args.cacert:
            command += ["--cacert", self.args.cacert]
        command += list(extra) + [url]
        if background:
            return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        return done.stdout

    def api(self, path, method="GET", body=None, headers=None):
        """The API as a script calls it, with the token."""
        request = urllib.request.Request(self.base + path, method=method,
                                         data=None if body is None else json.dumps(body).encode())
        request.add_header("Authorization", f"Bearer {self.token}")
        if body is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def rows(self):
        """The rows drawn now: [(id, path text, classes)]."""
        return self.page.eval_on_selector_all(
            "#rows .row[data-id]",
            "rows => rows.map(r => [r.dataset.id, r.querySelector('.col-path').textContent, r.className])")

    def wait_rows(self, predicate, what, timeout=WAIT_MS):
        deadline = time.time() + timeout / 1000
        rows = []
        while time.time() < deadline:
            rows = self.rows()
            if predicate(rows):
                ok(what)
                return rows
            time.sleep(0.05)
        raise AssertionError(f"{what}: rows are {rows}")

    def row(self, text):
        return self.page.locator("#rows .row", has_text=text).first

    def open_flow(self, text):
        self.row(text).click()
        self.page.wait_for_selector("#detail .tab-body", timeout=WAIT_MS)

    def tab(self, name):
        self.page.click(f"#detail .tab[data-tab={name}]")
        self.page.wait_for_selector(f"#detail .tab-body[data-tab-body={name}]", timeout=WAIT_MS)

    def count(self):
        text = self.page.inner_text("#count")
        return int(text.split()[0].replace(",", "")) if text else 0

    def wait_count(self, expected, what):
        wait_js(self.page, 
            "n => document.querySelector('#count').textContent.replace(/,/g, '').startsWith(n + ' ')",
            arg=expected, timeout=WAIT_MS)
        ok(what)

    def type_box(self, box, text):
        self.page.fill(box, text)
        self.page.press(box, "Enter")


# ---------------------------------------------------------------------------------


def scenario_live(ui):
    """Flows appear live; search (by the server), highlight, sort, keys, tabs."""
    ui.open()
    check(ui.count() == 0, "an empty session shows no flows")
    for path in ["/record/alpha", "/record/beta-1", "/record/beta-2"]:
        assert ui.curl(path).endswith("200"), path
    ui.wait_rows(lambda rows: len(rows) == 3, "three flows made by curl appear without a reload")

    list_requests = []
    ui.page.on("request", lambda r: list_requests.append(r.url) if "/flows?" in r.url else None)
    ui.type_box("#search", "~u /record/beta")
    rows = ui.wait_rows(lambda rows: len(rows) == 2 and all("beta" in r[1] for r in rows),
                        "the search box narrows the list to the matching flows")
    status, answer = ui.api("/flows?filter=" + urllib.request.quote("~u /record/beta"))
    check(status == 200 and sorted(f["id"] for f in answer) == sorted(r[0] for r in rows),
          "the rows are the store's answer to the same filter")
    check(any("filter=" in url for url in list_requests), "the filter was sent to the server")
    ui.curl("/record/beta-3")
    ui.wait_rows(lambda rows: len(rows) == 3, "a new matching flow appears under the search")
    ui.curl("/record/gamma")
    time.sleep(1)
    check(all("gamma" not in r[1] for r in ui.rows()), "a new flow the search does not match stays out")
    ui.type_box("#search", "~u record/(")
    wait_js(ui.page, "document.querySelector('#filter-error').textContent.includes('invalid filter')",
                              timeout=WAIT_MS)
    ok("a bad filter is reported with the server's reason")
    ui.type_box("#search", "")
    ui.wait_rows(lambda rows: len(rows) == 5, "clearing the search shows every flow")
    ui.page.screenshot(path=os.path.join(ui.args.shots, "list.png"))

    ui.type_box("#highlight", "~u beta-2")
    ui.wait_rows(lambda rows: len(rows) == 5
                 and [r[1].endswith("/record/beta-2") for r in rows] == ["highlighted" in r[2] for r in rows],
                 "the highlight box marks the flows matching it, and only those")
    ui.type_box("#highlight", "")

    ui.page.click("#list-head [data-column=path]")
    ui.page.click("#list-head [data-column=path]")
    ui.wait_rows(lambda rows: len(rows) == 5 and rows[0][1].endswith("/record/gamma") and rows[-1][1].endswith("/record/alpha"),
                 "sorting by path, descending, is done by the server")

    ui.page.click("#columns-button")
    ui.page.uncheck("#columns-menu input[data-column=method]")
    check(ui.page.locator("#list-head [data-column=method]").count() == 0
          and ui.page.locator("#rows .row .col-method").count() == 0, "a column can be hidden")
    ui.page.check("#columns-menu input[data-column=method]")
    check(ui.page.locator("#list-head [data-column=method]").count() == 1, "and shown again")
    ui.page.click("#columns-button")
    ui.page.focus("#list")
    ui.page.keyboard.press("j")
    ui.page.keyboard.press("j")
    ui.page.wait_for_selector("#rows .row.selected[data-index='1']", timeout=WAIT_MS)
    ok("j moves the selection down")
    ui.page.keyboard.press("k")
    ui.page.wait_for_selector("#rows .row.selected[data-index='0']", timeout=WAIT_MS)
    check(ui.page.locator("#rows .row.selected").count() == 1, "k moves it up; one row is selected")
    ui.page.keyboard.press("Enter")
    ui.page.wait_for_selector("#detail .tab-body[data-tab-body=request]", timeout=WAIT_MS)
    ok("enter opens the selected flow")
    ui.tab("response")
    ui.page.wait_for_selector("#detail .body-content pre", timeout=WAIT_MS)
    check("recorded" in ui.page.inner_text("#detail .body-content"), "the response tab shows the body")
    # Absent parts (no held message, no trailers) leave nothing behind, not "null".
    check("null" not in ui.page.inner_text("#detail").split(), "no stray null in the detail")
    # A gzip-encoded JSON body: decoded, pretty-printed; hex on demand.
    assert ui.curl("/gzip-json", "-o", "/dev/null").endswith("200")
    ui.type_box("#search", "~u gzip-json")
    ui.wait_rows(lambda rows: len(rows) == 1, "the gzip flow is found")
    ui.open_flow("gzip-json")
    ui.tab("response")
    ui.page.wait_for_selector("#detail .body-content pre.json", timeout=WAIT_MS)
    pretty = ui.page.inner_text("#detail .body-content pre.json")
    check('"hello": "periscope"' in pretty and "\n" in pretty, f"a gzip JSON body is decoded and pretty-printed ({pretty!r})")
    check("decoded from gzip" in ui.page.inner_text("#detail .body-bar"), "and says it was decoded")
    ui.page.select_option("#detail select[data-body-view=response]", "hex")
    check(ui.page.inner_text("#detail .body-content pre.hex").startswith("00000000  7b 22"), "the hex view shows the bytes")
    # Editing a header of that response keeps its compressed body as recorded: the
    # editor cannot show gzip as text, so it must not send text back.
    gzip_id = ui.rows()[0][0]
    recorded = ui.api(f"/flows/{gzip_id}")[1]["response"]
    ui.page.click("#detail [data-action=edit-response]")
    editor = "#detail [data-editor=response]"
    ui.page.wait_for_selector(f"{editor} textarea.body-editor", timeout=WAIT_MS)
    check("gzip-encoded" in ui.page.inner_text(f"{editor} .body-note"), "the editor says a gzip body is kept as recorded")
    check(ui.page.locator(f"{editor} textarea.body-editor").get_attribute("readonly") is not None,
          "and does not let it be typed into")
    ui.page.click(f"{editor} [data-action=add-header]")
    ui.page.fill(f"{editor} tbody tr:last-child .header-name", "x-edited")
    ui.page.fill(f"{editor} tbody tr:last-child .header-value", "yes")
    ui.page.click("#detail [data-action=save-edit]")
    ui.page.wait_for_selector("#detail [data-action=revert]", timeout=WAIT_MS)
    edited = ui.api(f"/flows/{gzip_id}")[1]["response"]
    check(["x-edited", "yes"] in edited["headers"], "the header edit is saved")
    check(edited["contentHash"] == recorded["contentHash"] and edited["contentLength"] == recorded["contentLength"],
          f"the gzip body is the recorded one after a header edit ({recorded['contentLength']} -> {edited['contentLength']} bytes)")
    ui.type_box("#search", "")
    ui.open_flow("/record/beta-2")
    ui.tab("timing")
    bars = ui.page.locator("#detail .wf-bar").count()
    check(bars >= 3, f"the timing tab draws a waterfall ({bars} bars)")
    ui.tab("connection")
    check("127.0.0.1" in ui.page.inner_text("#detail .tab-body"), "the connection tab shows the addresses")


def scenario_tls(ui):
    """A renegotiated flow's TLS tab: both legs, the events with their times, the CAs."""
    ui.open()
    out = ui.curl(ui.args.renegotiated)
    check(out.endswith("200"), f"the renegotiating location answers through the proxy ({out[-40:]!r})")
    ui.wait_rows(lambda rows: any("renegotiated-only" in r[1] for r in rows), "the renegotiated flow appears")
    marker = ui.row("renegotiated-only").locator(".col-events").inner_text()
    check(marker == "RC", f"the list marks the flow with R (renegotiation) and C (certificate request): {marker!r}")
    ui.open_flow("renegotiated-only")
    ui.tab("tls")
    body = ui.page.locator("#detail .tab-body")
    types = ui.page.eval_on_selector_all("#detail .tls-events tbody tr", "rows => rows.map(r => r.dataset.type)")
    for wanted in ["hello_request", "renegotiation_started", "certificate_requested", "certificate_presented",
                   "renegotiation_completed"]:
        check(wanted in types, f"the TLS timeline lists {wanted}")
    check(types.index("hello_request") < types.index("renegotiation_completed"), "the events are in order")
    times = ui.page.eval_on_selector_all("#detail .tls-events td.time", "cells => cells.map(c => c.textContent)")
    check(all(t.endswith(" ms") and (t.startswith("+") or t.startswith("−")) for t in times),
          f"each event has its time from the first request byte ({times})")
    cas = body.locator(".ca-names li").all_inner_texts()
    check(any(ui.args.ca_name in ca for ca in cas), f"the accepted CAs are listed ({cas})")
    server = body.locator("[data-leg='server leg']").inner_text()
    check("TLSv1.2" in server and "Cipher" in server, "the server leg shows version and cipher")
    check("Subject" in server and "Names (SAN)" in server, "the server leg shows its certificate with its names")
    client = body.locator("[data-leg='client leg']").inner_text()
    check("SNI" in client or "Version" in client, "the client leg is shown")
    ui.page.set_viewport_size({"width": 1280, "height": 1500})
    ui.page.screenshot(path=os.path.join(ui.args.shots, "tls-tab.png"))
    ui.tab("timing")
    reneg = ui.page.locator("#detail .wf-renegotiation").count()
    check(reneg == 1, f"the waterfall draws the renegotiation where it happened ({reneg})")
    ui.page.screenshot(path=os.path.join(ui.args.shots, "timing-tab.png"))
    # A server that sends a chain with its certificate: the TLS tab lists it.
    out = ui.curl(ui.args.chained)
    check(out.endswith("200"), f"the chained server answers through the proxy ({out[-40:]!r})")
    ui.wait_rows(lambda rows: any("/chained" in r[1] for r in rows), "the chained server's flow appears")
    ui.open_flow("/chained")
    ui.tab("tls")
    chain = ui.page.locator("#detail .cert-chain").inner_text()
    check("Chain sent with it (1)" in chain and "Periscope Test Root" in chain,
          f"the TLS tab shows the chain the server sent after its certificate ({chain!r})")
    # A client that does not trust Periscope's CA: the event log says why, live.
    ui.page.click("#events-button")
    subprocess.run(["curl", "-s", "-o", "/dev/null", "--max-time", "10", "-x", f"http://127.0.0.1:{ui.args.proxy}",
                    "--cacert", "/etc/ssl/certs/ca-certificates.crt", ui.args.renegotiated], timeout=30)
    wait_js(ui.page, "document.querySelector('#events').textContent.includes(\"does not trust Periscope's CA\")",
            timeout=WAIT_MS)
    ok("the Events pane shows a client's refusal of Periscope's certificate, with the fix")


def scenario_intercept(ui):
    """Intercept set in the UI; a held request edited (header, body) and resumed; another killed."""
    ui.open()
    ui.type_box("#intercept", "~u /record/held | ~u /record/kill")
    wait_js(ui.page, "document.querySelector('#status').textContent.includes('intercepting')", timeout=WAIT_MS)
    status, options = ui.api("/options")
    check(options["intercept"] == "~u /record/held | ~u /record/kill", "the intercept box sets the proxy's option")

    held = ui.curl("/record/held", "-d", "original-body", "-H", "X-Before: 1", background=True)
    ui.wait_rows(lambda rows: any("held" in r[1] and "intercepted" in r[2] for r in rows),
                 "the held flow shows as intercepted")
    ui.open_flow("/record/held")
    ui.page.click("#detail [data-action=edit-request]")
    editor = ui.page.locator("#detail [data-editor=request]")
    wait_js(ui.page, 
        "document.querySelector('#detail .body-editor').value === 'original-body'", timeout=WAIT_MS)
    ok("the editor shows the request body")
    editor.locator("[data-action=add-header]").click()
    editor.locator("tbody tr").last.locator(".header-name").fill("X-Edited-In-UI")
    editor.locator("tbody tr").last.locator(".header-value").fill("yes")
    editor.locator(".body-editor").fill("edited-in-the-browser")
    editor.locator("[data-action=save-edit]").click()
    ui.page.wait_for_selector("#detail .first-line", timeout=WAIT_MS)
    ui.page.click("#detail [data-action=resume]")
    # The filter matches the response too: it is held in its turn.
    ui.page.wait_for_selector("#detail .badge.intercepted:has-text('response')", timeout=WAIT_MS)
    ok("after resume the flow waits at its response")
    ui.tab("response")
    ui.page.click("#detail [data-action=edit-response]")
    editor = ui.page.locator("#detail [data-editor=response]")
    wait_js(ui.page, "document.querySelector('#detail .body-editor').value.includes('recorded 21 bytes')",
            timeout=WAIT_MS)
    ok("the response editor shows the response body")
    editor.locator("input[name=status_code]").fill("203")
    editor.locator(".body-editor").fill("response-edited-in-the-browser")
    editor.locator("[data-action=save-edit]").click()
    ui.page.wait_for_selector("#detail .first-line", timeout=WAIT_MS)
    ui.page.click("#detail [data-action=resume]")
    out, _ = held.communicate(timeout=30)
    check(out == "response-edited-in-the-browser\n203",
          f"resumed at the response, the client gets the response as edited in the UI ({out!r})")

    killed = ui.curl("/record/kill", background=True)
    ui.wait_rows(lambda rows: any("kill" in r[1] and "intercepted" in r[2] for r in rows),
                 "the second held flow shows as intercepted")
    ui.open_flow("/record/kill")
    ui.page.click("#detail [data-action=kill]")
    out, _ = killed.communicate(timeout=30)
    check(out.endswith("502"), f"kill in the UI: the client gets a 502 ({out[-80:]!r})")
    # Two held at once: Kill all ends both; the clients get 502s.
    first = ui.curl("/record/kill-a", background=True)
    second = ui.curl("/record/kill-b", background=True)
    ui.wait_rows(lambda rows: sum("intercepted" in r[2] for r in rows) == 2, "two flows held at once")
    ui.page.click("#kill-all")
    outs = [first.communicate(timeout=30)[0], second.communicate(timeout=30)[0]]
    check(all(o.endswith("502") for o in outs), f"Kill all ends every held flow ({[o[-20:] for o in outs]})")
    ui.wait_rows(lambda rows: not any("intercepted" in r[2] for r in rows), "no flow shows as held any more")
    # Resume all lets a held one go on (at the request, then at the response).
    third = ui.curl("/record/held-again", background=True)
    ui.wait_rows(lambda rows: any("held-again" in r[1] and "intercepted" in r[2] for r in rows), "a third flow is held")
    ui.page.click("#resume-all")
    wait_js(ui.page, "document.querySelector('#status').textContent.includes('resumed 1')")
    deadline = time.time() + 20
    while True:
        flows = ui.api("/flows?filter=" + urllib.request.quote("~u held-again"))[1]
        if flows and (flows[0].get("intercept") or {}).get("at") == "response":
            break
        assert time.time() < deadline, f"not held at the response: {flows}"
        time.sleep(0.05)
    ui.wait_rows(lambda rows: any("held-again" in r[1] and "intercepted" in r[2] for r in rows), "held again at its response")
    ui.page.click("#resume-all")
    out = third.communicate(timeout=30)[0]
    check(out.endswith("200"), f"Resume all lets it go on ({out[-40:]!r})")
    ui.type_box("#intercept", "")
    wait_js(ui.page, "document.querySelector('#status').textContent.includes('intercept off')", timeout=WAIT_MS)
    check(ui.api("/options")[1]["intercept"] is None, "an empty intercept box turns intercepting off")
    ui.page.click("#options-button")
    ui.page.check("#option-intercept-tls")
    ui.page.fill("#option-intercept", "~m POST")
    ui.page.click("#options button[type=submit]")
    wait_js(ui.page, "document.querySelector('#options-result').textContent === 'applied'")
    options = ui.api("/options")[1]
    check(options["intercept"] == "~m POST" and options["intercept_tls"] is True, f"the options page changes the running proxy ({options})")
    # The rules, one pattern per line, applied to the running proxy.
    ui.page.fill("[data-setting=modify_headers]", "/~q/x-from-ui/1\n/~s/x-also/2")
    ui.page.check("[data-setting=anticomp]")
    ui.page.evaluate("document.querySelector('#options-result').textContent = ''")
    ui.page.click("#options button[type=submit]")
    wait_js(ui.page, "document.querySelector('#options-result').textContent === 'applied'")
    options = ui.api("/options")[1]
    check(options["modify_headers"] == ["/~q/x-from-ui/1", "/~s/x-also/2"] and options["anticomp"] is True,
          f"the rules set on the options page run ({options})")
    ui.page.fill("[data-setting=modify_headers]", "/~q/x-from-ui/1\n/~bad(/x/1")
    ui.page.click("#options button[type=submit]")
    wait_js(ui.page, "document.querySelector('#options-result').textContent.includes('--modify-headers')")
    check(ui.api("/options")[1]["modify_headers"] == ["/~q/x-from-ui/1", "/~s/x-also/2"],
          "a bad pattern is refused with its position, the rules in force stay")
    check(ui.page.input_value("#intercept") == "~m POST", "and the intercept box follows")
    ui.page.fill("#option-intercept", "~bad")
    ui.page.click("#options button[type=submit]")
    wait_js(ui.page, "document.querySelector('#options-result').textContent.includes('invalid')")
    check(ui.api("/options")[1]["intercept"] == "~m POST", "a bad option is refused with the reason, nothing changes")
    # Timeouts and server TLS: the same page, applied to the running proxy.
    ui.page.fill("#option-intercept", "~m POST")
    ui.page.fill("[data-setting=modify_headers]", "/~q/x-from-ui/1\n/~s/x-also/2")
    ui.page.fill("[data-setting=response_timeout]", "45s")
    ui.page.evaluate("document.querySelector('#options-result').textContent = ''")
    ui.page.click("#options button[type=submit]")
    wait_js(ui.page, "document.querySelector('#options-result').textContent === 'applied'")
    check(ui.api("/options")[1]["response_timeout"] == "45s", "a timeout set on the options page is in force")
    certs = ui.api("/options")[1]["client_certs"]
    ui.page.fill("[data-setting=client_certs]", "/nonexistent/client.pem")
    ui.page.click("#options button[type=submit]")
    wait_js(ui.page, "document.querySelector('#options-result').textContent.includes('client_certs')")
    check(ui.api("/options")[1]["client_certs"] == certs,
          "a client certificate file that does not load is refused with its name, nothing changes")
    # Scripts, one path per line: started, then stopped, on the running proxy.
    script = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ui-script-{os.getpid()}.py")
    with open(script, "w") as f:
        f.write("def response(flow):\n    flow.response.headers['x-from-ui-script'] = 'yes'\n")
    ui.page.fill("[data-setting=client_certs]", certs or "")
    ui.page.fill("[data-setting=scripts]", script)
    ui.page.evaluate("document.querySelector('#options-result').textContent = ''")
    ui.page.click("#options button[type=submit]")
    wait_js(ui.page, "document.querySelector('#options-result').textContent === 'applied'", timeout=WAIT_MS)
    check(ui.api("/options")[1]["scripts"] == [script], "a script set on the options page is running")
    check("x-from-ui-script: yes" in ui.curl("/record/scripted", "-i"), "and changes the flows")
    ui.page.fill("[data-setting=scripts]", "")
    ui.page.evaluate("document.querySelector('#options-result').textContent = ''")
    ui.page.click("#options button[type=submit]")
    wait_js(ui.page, "document.querySelector('#options-result').textContent === 'applied'", timeout=WAIT_MS)
    check("x-from-ui-script" not in ui.curl("/record/unscripted", "-i"), "an empty scripts box stops it")
    os.remove(script)


def scenario_actions(ui):
    """Replay, duplicate, mark, revert, delete, export as curl, clear."""
    ui.open()
    assert ui.curl("/record/one").endswith("200")
    ui.wait_rows(lambda rows: len(rows) == 1, "the flow appears")
    ui.open_flow("/record/one")
    ui.page.click("#detail [data-action=replay]")
    ui.wait_rows(lambda rows: len(rows) == 2 and "replay" in rows[1][2], "replay makes a new flow, marked as a replay")
    ui.open_flow("/record/one")
    ui.page.click("#detail [data-action=duplicate]")
    ui.wait_count(3, "duplicate makes a copy")
    ui.page.click("#detail [data-action=mark]")
    ui.wait_rows(lambda rows: "marked" in rows[0][2], "mark shows in the list")
    ui.tab("comment")
    ui.page.fill("#detail textarea.comment", "looked at this")
    ui.page.click("#detail [data-action=save-comment]")
    wait_js(ui.page, "document.querySelector('#status').textContent.includes('comment: done')", timeout=WAIT_MS)
    first = ui.rows()[0][0]
    check(ui.api(f"/flows/{first}")[1]["comment"] == "looked at this", "the comment is saved")
    # Edit the recorded request's path, then revert it.
    ui.tab("request")
    ui.page.click("#detail [data-action=edit-request]")
    ui.page.fill("#detail [data-editor=request] input[name=path]", "/record/changed")
    ui.page.click("#detail [data-action=save-edit]")
    ui.page.wait_for_selector("#detail [data-action=revert]", timeout=WAIT_MS)
    check(ui.api(f"/flows/{first}")[1]["request"]["path"] == "/record/changed", "the edit changed the recorded flow")
    ui.page.click("#detail [data-action=revert]")
    wait_js(ui.page, "document.querySelector('#status').textContent.includes('revert: done')", timeout=WAIT_MS)
    check(ui.api(f"/flows/{first}")[1]["request"]["path"] == "/record/one", "revert puts back the recorded request")
    ui.page.select_option("#detail select[data-action=export]", "curl")
    ui.page.wait_for_selector("#detail textarea[data-export=curl]", timeout=WAIT_MS)
    command = ui.page.input_value("#detail textarea[data-export=curl]")
    check(command.startswith("curl"), "export as curl shows the command")
    again = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    check("recorded" in again.stdout, f"the exported curl command sends the request again ({again.stdout!r})")
    ui.page.click("#detail .export button:has-text('Close')")
    ui.page.select_option("#detail select[data-action=export]", "har")
    ui.page.wait_for_selector("#detail textarea[data-export=har]", timeout=WAIT_MS)
    har = json.loads(ui.page.input_value("#detail textarea[data-export=har]"))
    check(har["log"]["entries"][0]["request"]["url"].endswith("/record/one"), "export as HAR")
    ui.page.click("#detail .export button:has-text('Close')")
    ui.page.click("#detail [data-action=delete]")
    ui.wait_count(2, "delete removes the flow")
    # Save the shown flows, clear, open the file again.
    with ui.page.expect_download() as download:
        ui.page.click("#save")
    saved = os.path.join(ui.args.shots, "saved.periscope")
    download.value.save_as(saved)
    with open(saved, "rb") as file:
        check(file.read(16) == b"SQLite format 3\0", "Save downloads a session file")
    ui.page.on("dialog", lambda dialog: dialog.accept())
    ui.page.click("#clear")
    ui.wait_count(0, "clear empties the session")
    check(ui.api("/flows/count")[1]["count"] == 0, "the store is empty after clear")
    ui.page.set_input_files("#open", saved)
    ui.wait_count(2, "opening the saved file brings its two flows back")
    check("2 flows added" in ui.page.inner_text("#status"), "and says how many")


def scenario_websocket(ui):
    """A WebSocket flow's messages: direction, type, content, and how it closed."""
    ui.open()
    client = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers", "websocket_client.py")
    done = subprocess.run([sys.executable, client, "--proxy", f"127.0.0.1:{ui.args.proxy}",
                           "--url", ui.args.websocket, "--big-size", "1000", "--no-compression"],
                          capture_output=True, text=True, timeout=60)
    check(done.returncode == 0 and "hello, periscope" in done.stdout, f"the WebSocket conversation ran ({done.stderr[-300:]})")
    ui.wait_rows(lambda rows: len(rows) == 1, "the WebSocket flow appears")
    ui.open_flow("127.0.0.1")
    ui.tab("websocket")
    rows = ui.page.eval_on_selector_all(
        "#detail table.messages tbody tr",
        "rows => rows.map(r => [r.className, ...Array.from(r.cells, c => c.textContent)])")
    texts = [r for r in rows if r[3] == "text" and "hello, periscope" in r[5]]
    check(len(texts) == 2, f"the text message shows both ways ({len(texts)})")
    check({r[0] for r in texts} == {"from-client", "from-server"}, "with its direction")
    check(any(r[3] == "binary" and "00 01 02 03" in r[5] for r in rows), "a binary message shows as hex")
    check(all(r[2].startswith("+") for r in rows), "each message has its time from the request")
    summary = ui.page.inner_text("#detail .tab-body p")
    check("4000" in summary and "client" in summary, f"the close code and who closed ({summary})")


def scenario_websocket_held(ui):
    """WebSocket messages held one by one in the UI: one edited, one dropped."""
    ui.open()
    ui.type_box("#intercept", "~websocket")
    wait_js(ui.page, "document.querySelector('#status').textContent.includes('intercepting')")
    chat_script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers", "ws_chat.py")
    chat = subprocess.Popen([sys.executable, "-u", chat_script, "--proxy", f"127.0.0.1:{ui.args.proxy}",
                             "--url", ui.args.websocket + "chat", "--wait", "3", "--send", "one", "two"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ui.wait_rows(lambda rows: any("intercepted" in r[2] for r in rows), "the WebSocket handshake is held")
    ui.open_flow("127.0.0.1")
    ui.page.click("#detail [data-action=resume]")
    ui.page.wait_for_selector("#detail .badge.intercepted:has-text('response')", timeout=WAIT_MS)
    ui.page.click("#detail [data-action=resume]")

    def held(from_whom, text):
        wait_js(ui.page, """([who, text]) => {
            const h = document.querySelector('#detail .held h4');
            const t = document.querySelector('#detail .held-message');
            return h && t && h.textContent.includes(who) && t.value === text;
        }""", [from_whom, text])
        ok(f"the message {text!r} {from_whom} is held")

    held("from the client", "one")
    ui.page.fill("#detail .held-message", "ONE-edited")
    ui.page.click("#detail [data-action=ws-send]")
    held("from the server", "ONE-edited")
    ui.page.click("#detail [data-action=ws-send]")
    held("from the client", "two")
    ui.page.click("#detail [data-action=ws-drop]")
    out, err = chat.communicate(timeout=60)
    check("received: ONE-edited" in out, f"the edited message reached the server and came back ({out!r})")
    check("received: two" not in out and "received: one" not in out, "the dropped and the original never arrived")


def scenario_certificate(ui):
    """--intercept-tls: a renegotiation held at the server's certificate request; the
    certificate chosen in the UI is the one the server sees."""
    ui.open()
    for button, expected in [("cert-configured", "periscope-test-client"), ("cert-none", "(null)")]:
        client = ui.curl(ui.args.renegotiated, "-D", "-", background=True)
        ui.wait_rows(lambda rows: any("vedauth" in r[1] and "intercepted" in r[2] for r in rows),
                     "the flow waits at the server's certificate request")
        ui.page.locator("#rows .row.intercepted").first.click()
        ui.page.wait_for_selector("#detail .held [data-action=cert-none]", timeout=WAIT_MS)
        cas = ui.page.locator("#detail .held .ca-names li").all_inner_texts()
        check(any(ui.args.ca_name in ca for ca in cas), f"the held flow lists the accepted CAs ({cas})")
        ui.page.click(f"#detail .held [data-action={button}]")
        out, _ = client.communicate(timeout=30)
        cn = next((line.split(":", 1)[1].strip() for line in out.splitlines()
                   if line.lower().startswith("x-client-cert-cn:")), None)
        check(out.endswith("200") and cn == expected, f"{button}: the server saw {cn!r}")
        ui.wait_rows(lambda rows: not any("intercepted" in r[2] for r in rows), "no flow is held any more")


def scenario_login(ui, browser):
    """Without the token: a login form, no data; a cross-origin POST is refused."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(ui.base + "/")
    page.wait_for_selector("#login:not([hidden])", timeout=WAIT_MS)
    check(page.locator("#main").is_hidden(), "without the token the page shows the login, not the list")
    check(page.locator("#rows .row").count() == 0, "and no flow")
    status, _ = ui.api("/flows", headers={"Authorization": "Bearer wrong"})
    check(status == 401, f"the API refuses a wrong token ({status})")
    page.fill("#login-token", "not-the-token")
    page.click("#login-form button")
    page.wait_for_selector("#login:not([hidden])", timeout=WAIT_MS)
    check("wrong" in page.inner_text("#login-error"), "a wrong token is said to be wrong")
    page.fill("#login-token", ui.token)
    page.click("#login-form button")
    page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    check(page.url.endswith("/") and "token" not in page.url, "the right token logs in and leaves the address bar")
    # A page of another origin posting to the API: the browser sends its Origin.
    status, _ = ui.api("/flows/resume", method="POST", headers={"Origin": "http://evil.example"})
    check(status == 403, f"a cross-origin POST is refused ({status})")
    csp = page.evaluate(
        "async () => (await fetch('/', {headers: {Accept: 'text/html'}})).headers.get('content-security-policy')")
    check(csp is not None and "default-src 'none'" in csp and "script-src 'self'" in csp
          and "unsafe-inline" not in csp, f"the page carries a strict Content-Security-Policy ({csp})")
    # The logged-in page itself, from another origin's point of view: a POST without
    # the XSRF header is refused even with the cookie.
    status = page.evaluate(
        "async () => (await fetch('/flows/resume', {method: 'POST'})).status")
    check(status == 403, f"a cookie-only POST without the XSRF token is refused ({status})")
    # The onboarding page: no token needed, the CA in three forms.
    page.goto(ui.base + "/onboarding")
    check(page.locator("#download-p12").count() == 1 and "Firefox" in page.inner_text("body")
          and "keytool" in page.inner_text("body"), "the onboarding page has the downloads and per-platform steps")
    with page.expect_download() as download:
        page.click("#download-pem")
    pem = open(download.value.path(), "rb").read()
    check(pem == open(ui.args.cacert, "rb").read(), "the PEM download is the proxy's CA certificate")
    with page.expect_download() as download:
        page.click("#download-cer")
    check(open(download.value.path(), "rb").read()[:1] == b"\x30", "the DER download is DER")
    with page.expect_download() as download:
        page.click("#download-p12")
    check(len(open(download.value.path(), "rb").read()) > 100, "the PKCS#12 download is there")
    context.close()


def scenario_big(ui):
    """A 100,000-flow session: first paint, bounded rows, scrolling, a search."""
    started = time.time()
    ui.page.goto(ui.args.url)
    ui.page.wait_for_selector("#rows .row[data-id]", timeout=WAIT_MS)
    first_paint = time.time() - started
    total = ui.count()
    check(total >= ui.args.flows, f"the list knows every flow ({total})")
    drawn = ui.page.locator("#rows .row").count()
    check(drawn <= 150, f"only the rows in view are drawn ({drawn})")
    frames = []
    for fraction in [0.1, 0.5, 0.9, 0.25, 0.75, 0.0]:
        t0 = time.time()
        ui.page.evaluate("f => { const v = document.querySelector('#viewport'); v.scrollTop = f * v.scrollHeight; }", fraction)
        # Drawn for the new position (the first row is the one the scroll position
        # calls for, less the overscan), and every row filled in from the server.
        wait_js(ui.page, """() => {
            const v = document.querySelector('#viewport');
            const rows = document.querySelectorAll('#rows .row');
            const first = Math.max(0, Math.floor(v.scrollTop / 22) - 10);
            return rows.length > 0 && Number(rows[0].dataset.index) === first
                && document.querySelectorAll('#rows .row.loading').length === 0;
        }""", timeout=WAIT_MS)
        frames.append(time.time() - t0)
        drawn = max(drawn, ui.page.locator("#rows .row").count())
    check(drawn <= 150, f"rows drawn stay bounded while scrolling ({drawn})")
    index = int(ui.page.get_attribute("#rows .row[data-id]", "data-index"))
    check(index == 0, "scrolling back to the top shows the first flow")
    ui.page.screenshot(path=os.path.join(ui.args.shots, "list-big.png"))
    t0 = time.time()
    unsearched = ui.page.inner_text("#count")
    ui.type_box("#search", ui.args.search)
    wait_js(ui.page,
        """([pattern, before]) => {
            const count = document.querySelector('#count').textContent;
            return count !== before && new RegExp(pattern).test(count)
                && document.querySelectorAll('#rows .row[data-id]').length > 0;
        }""",
        [ui.args.search_count, unsearched], timeout=60_000)
    search = time.time() - t0
    ok("a search over the whole session is answered")
    cdp = ui.page.context.new_cdp_session(ui.page)
    cdp.send("Performance.enable")
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    heap = next((m["value"] for m in metrics if m["name"] == "JSHeapUsedSize"), None)
    nodes = next((m["value"] for m in metrics if m["name"] == "Nodes"), None)
    print("figures: " + json.dumps({
        "flows": total, "first_paint_s": round(first_paint, 3), "max_rows_drawn": drawn,
        "scroll_jump_s": [round(f, 3) for f in frames], "search_s": round(search, 3),
        "js_heap_mb": round(heap / 1e6, 1) if heap else None, "dom_nodes": nodes,
        "chromium_pss_mb": chromium_pss_mb(),
    }), flush=True)


def chromium_pss_mb():
    """The memory of every Chromium process of this user (the one this script drives:
    tests and the bench run one at a time), as proportional set size, so that pages
    the processes share are counted once."""
    total_kb = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() not in ("chromium", "chrome", "headless_shell"):
                    continue
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total_kb += int(line.split()[1])
        except OSError:
            continue
    return round(total_kb / 1024, 1) if total_kb else None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario")
    parser.add_argument("--url", required=True)
    parser.add_argument("--proxy", type=int, required=True)
    parser.add_argument("--origin", default="")
    parser.add_argument("--cacert", default="")
    parser.add_argument("--renegotiated", default="")
    parser.add_argument("--ca-name", default="")
    parser.add_argument("--chained", default="", help="a URL whose server sends a chain")
    parser.add_argument("--websocket", default="")
    parser.add_argument("--shots", default="/tmp")
    # The big scenario: how many flows the session holds, the search, and what the
    # flow count reads once the search is answered (a regular expression).
    parser.add_argument("--flows", type=int, default=100_000)
    parser.add_argument("--search", default="~u /page/9999")
    parser.add_argument("--search-count", default="^1[01] flows")
    args = parser.parse_args()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        # Refusals the checks provoke on purpose (a bad filter, a wrong token, an
        # action on a flow in the wrong state) are logged by Chromium as failed loads.
        page.on("console", lambda m: errors.append(m.text)
                if m.type == "error" and "Failed to load resource" not in m.text else None)
        ui = Ui(args, page)
        try:
            if args.scenario == "login":
                scenario_login(ui, browser)
            else:
                globals()[f"scenario_{args.scenario}"](ui)
            check(not errors, f"the page logged no errors {errors}")
        except Exception:
            try:
                page.screenshot(path=os.path.join(args.shots, f"failed-{args.scenario}.png"), full_page=True)
            except Exception:
                pass
            raise
        finally:
            browser.close()


if __name__ == "__main__":
    main()
