"""Unit tests of the `__NAME__` plugin against the SDK's mock host: `python3 -m unittest` (no runner, no build)."""

import unittest

from respawn_plugin import Failure, FailureKind
from respawn_plugin.testing import MockHost

import app


class GreetTest(unittest.TestCase):
    def test_plans_then_greets(self):
        host = MockHost()
        plan = host.invoke(app.plugin, "greet", "plan", {"who": "world"})
        self.assertEqual(plan, {"greeting": "would greet world"})
        apply = host.invoke(app.plugin, "greet", "apply", {"who": "world"})
        self.assertEqual(apply["greeting"], "hello, world")
        self.assertEqual(host.log_messages(), ["hello, world"])
        self.assertEqual(host.state_map(), {})
        self.assertEqual(host.denials, [])

    def test_a_misspelt_param_is_invalid_input(self):
        with self.assertRaises(Failure) as caught:
            MockHost().invoke(app.plugin, "greet", "apply", {"whom": "world"})
        self.assertEqual(caught.exception.kind, FailureKind.INVALID_INPUT)
        self.assertIn("unknown field `whom`", caught.exception.message)


class FetchTest(unittest.TestCase):
    URL = "http://127.0.0.1:8080/health"

    def test_checks_the_status_and_hashes_the_body(self):
        host = MockHost().http(self.URL, 200, b"ok", {"content-type": "text/plain"})
        out = host.invoke(app.plugin, "fetch", "apply", {"url": self.URL})
        self.assertEqual(out["status"], 200)
        self.assertEqual(out["bytes"], 2)
        self.assertEqual(out["content_type"], "text/plain")
        self.assertEqual(host.http_calls[0].method, "GET")

    def test_an_unexpected_status_fails_verification(self):
        host = MockHost().http(self.URL, 503, b"down")
        with self.assertRaises(Failure) as caught:
            host.invoke(app.plugin, "fetch", "verify", {"url": self.URL})
        self.assertEqual(caught.exception.kind, FailureKind.VERIFICATION_FAILED)

    def test_a_url_outside_the_grant_is_denied(self):
        host = MockHost()
        with self.assertRaises(Failure) as caught:
            host.invoke(app.plugin, "fetch", "plan", {"url": self.URL})
        self.assertEqual(caught.exception.kind, FailureKind.DENIED)
        self.assertEqual(host.denial().capability, "http")


if __name__ == "__main__":
    unittest.main()
