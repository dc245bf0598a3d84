"""The flow API scripts see, against mitmproxy's documented behaviour, and the diff
sent back (run by crates/addons/tests/runtime.rs)."""

import base64
import json
import unittest

from periscope_addons import flow as flowmod
from mitmproxy import http


def make_flow(**response):
    data = {
        "id": "f1",
        "request": {
            "method": "POST", "scheme": "https", "host": "example.com", "port": 8443,
            "path": "/a/b%20c?x=1&y=2&x=3", "http_version": "HTTP/1.1",
            "headers": [["Host", "example.com:8443"], ["Cookie", "a=1; b=2"],
                        ["Content-Type", "application/json"], ["X-Bin", "\u00ff"]],
            "content": base64.b64encode(b'{"k": "v"}').decode(),
        },
        "response": response or None,
        "marked": False, "comment": "",
    }
    return http.HTTPFlow(data, {})


class RequestApi(unittest.TestCase):
    def test_a_new_host_is_followed_by_the_host_header_and_sent_back(self):
        f = make_flow()
        before = f._snapshot()
        f.request.host = "mitmproxy.org"
        self.assertEqual(f.request.headers["host"], "mitmproxy.org:8443")
        self.assertEqual(f.request.pretty_host, "mitmproxy.org")
        changes = flowmod.diff(before, f)["request"]
        self.assertEqual(changes["host"], "mitmproxy.org")
        self.assertIn(["Host", "mitmproxy.org:8443"], changes["headers"])
        f.request.url = "http://other.example/x"
        self.assertEqual(f.request.headers["host"], "other.example")

    def test_url_parts_query_cookies_and_text(self):
        f = make_flow()
        r = f.request
        self.assertEqual(r.url, "https://example.com:8443/a/b%20c?x=1&y=2&x=3")
        self.assertEqual(r.pretty_url, "https://example.com:8443/a/b%20c?x=1&y=2&x=3")
        self.assertEqual(r.pretty_host, "example.com")
        self.assertEqual(r.path_components, ("a", "b c"))
        self.assertEqual(r.query["x"], "1")
        self.assertEqual(r.query.get_all("x"), ["1", "3"])
        self.assertEqual(r.cookies["b"], "2")
        self.assertEqual(r.json(), {"k": "v"})
        self.assertEqual(r.text, '{"k": "v"}')
        self.assertEqual(r.headers["x-bin"], "\udcff", "undecodable bytes as surrogates")

    def test_headers_are_a_case_insensitive_multidict(self):
        h = http.Headers([("A", "1"), ("b", "2"), ("a", "3")])
        self.assertEqual(h["a"], "1")
        self.assertEqual(h.get_all("A"), ["1", "3"])
        h["A"] = "x"
        self.assertEqual(h.fields, [("A", "x"), ("b", "2")])
        del h["B"]
        self.assertNotIn("b", h)


class Diff(unittest.TestCase):
    def test_only_changed_fields_travel_and_bytes_survive(self):
        f = make_flow()
        before = f._snapshot()
        f.request.query["x"] = "9"
        f.request.headers["X-New"] = "é"
        changes = flowmod.diff(before, f)
        self.assertEqual(set(changes), {"request"})
        self.assertEqual(set(changes["request"]), {"path", "headers"})
        self.assertEqual(changes["request"]["path"], "/a/b%20c?x=9&y=2")
        self.assertIn(["X-Bin", "\u00ff"], changes["request"]["headers"])
        self.assertIn(["X-New", "\u00c3\u00a9"], changes["request"]["headers"], "UTF-8 bytes")

    def test_a_made_response_is_sent_whole(self):
        f = make_flow()
        before = f._snapshot()
        f.response = http.Response.make(404, "gone", {"X": "1"})
        changes = flowmod.diff(before, f)
        self.assertTrue(changes["response_new"])
        self.assertEqual(changes["response"]["status_code"], 404)
        self.assertEqual(base64.b64decode(changes["response"]["content"]), b"gone")

    def test_set_text_changes_content_and_its_length(self):
        f = make_flow(status_code=200, reason="OK",
                      headers=[["Content-Type", "application/json"], ["Content-Length", "2"]],
                      content=base64.b64encode(b"{}").decode())
        before = f._snapshot()
        f.response.text = json.dumps({"a": "ü"})
        changes = flowmod.diff(before, f)
        self.assertEqual(json.loads(base64.b64decode(changes["response"]["content"])), {"a": "ü"})
        length = dict(changes["response"]["headers"])["Content-Length"]
        self.assertEqual(int(length), len(json.dumps({"a": "ü"}).encode()))

    def test_kill_marked_comment_and_intercept(self):
        f = make_flow()
        before = f._snapshot()
        f.marked = True
        f.comment = "seen"
        f.intercept()
        f.kill()
        changes = flowmod.diff(before, f)
        self.assertEqual(
            (changes["marked"], changes["comment"], changes["intercept"], changes["kill"]),
            (True, "seen", True, True),
        )

    def test_nothing_changed_is_an_empty_diff(self):
        f = make_flow()
        before = f._snapshot()
        _ = f.request.text, f.request.query.get("x"), f.request.headers.get("host")
        self.assertEqual(flowmod.diff(before, f), {})



def deferred_flow(fetched):
    """A `response` call whose bodies were left out: `fetched` counts the fetches."""
    data = {
        "id": "f2",
        "request": {"method": "POST", "scheme": "https", "host": "example.com", "port": 443,
                    "path": "/", "headers": [["Content-Type", "application/json"]],
                    "content": None},
        "response": {"status_code": 200, "reason": "OK", "http_version": "HTTP/1.1",
                     "headers": [["Content-Type", "text/plain"], ["Content-Length", "5"]],
                     "content": None},
        "marked": False, "comment": "",
    }

    def fetch(side):
        fetched.append(side)
        return b'{"k": 1}' if side == "request" else b"hello"

    return http.HTTPFlow(data, {}, fetch=fetch, deferred=["request", "response"])


class DeferredBodies(unittest.TestCase):
    def test_a_body_nobody_reads_is_never_fetched_and_no_change(self):
        fetched = []
        f = deferred_flow(fetched)
        before = f._snapshot()
        f.response.headers["x-seen"] = "1"
        self.assertEqual(flowmod.diff(before, f), {"response": {"headers": [
            ["Content-Type", "text/plain"], ["Content-Length", "5"], ["x-seen", "1"]]}})
        self.assertEqual(fetched, [])

    def test_a_body_read_is_fetched_once_and_unchanged_is_no_change(self):
        fetched = []
        f = deferred_flow(fetched)
        before = f._snapshot()
        self.assertEqual(f.request.json(), {"k": 1})
        self.assertEqual(f.response.text, "hello")
        self.assertEqual(f.response.content, b"hello")
        self.assertEqual(fetched, ["request", "response"])
        self.assertEqual(flowmod.diff(before, f), {})

    def test_a_body_set_without_reading_is_sent_and_fetches_nothing(self):
        fetched = []
        f = deferred_flow(fetched)
        before = f._snapshot()
        f.response.text = "bye"
        changes = flowmod.diff(before, f)
        self.assertEqual(base64.b64decode(changes["response"]["content"]), b"bye")
        self.assertNotIn("request", changes)
        self.assertEqual(fetched, [])

    def test_a_body_read_then_changed_is_sent(self):
        fetched = []
        f = deferred_flow(fetched)
        before = f._snapshot()
        f.response.text = f.response.text.upper()
        changes = flowmod.diff(before, f)
        self.assertEqual(base64.b64decode(changes["response"]["content"]), b"HELLO")

    def test_an_undone_hook_leaves_the_body_to_fetch_again(self):
        fetched = []
        f = deferred_flow(fetched)
        before = f._snapshot()
        saved = f._save()
        f.response.content = b"changed"
        f._restore(saved)
        self.assertEqual(flowmod.diff(before, f), {})
        self.assertEqual(f.response.content, b"hello")


if __name__ == "__main__":
    unittest.main()
