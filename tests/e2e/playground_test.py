#!/usr/bin/env python3
"""e2e_playground: drives examples/security-playground/app.py over real HTTP.

Starts the app on 127.0.0.1 with an ephemeral port, then checks every route
with urllib the way the attacks use them. Needs SIDETRACE_SOURCE_DIR (CTest
sets it) or runs from the source tree.
"""

import os
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.error
import urllib.parse
import urllib.request

SOURCE_DIR = os.environ.get(
    "SIDETRACE_SOURCE_DIR",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")),
)
APP = os.path.join(SOURCE_DIR, "examples", "security-playground", "app.py")
TIMEOUT_S = 30


class PlaygroundTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc = subprocess.Popen(
            [sys.executable, APP, "--bind", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        # The first line says where it listens; read it with a deadline so a
        # broken app fails the test instead of hanging it.
        line = []
        reader = threading.Thread(target=lambda: line.append(cls.proc.stdout.readline()))
        reader.start()
        reader.join(TIMEOUT_S)
        if not line or not line[0].startswith("listening on "):
            cls.proc.kill()
            raise RuntimeError(f"playground did not start: {line!r}")
        cls.base = "http://" + line[0].split()[-1]

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(TIMEOUT_S)

    def request(self, path, data=None, method=None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def test_health(self):
        self.assertEqual(self.request("/health"), (200, "OK\n"))

    def test_get_reads_a_file(self):
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write("secret line\n")
        try:
            self.assertEqual(self.request(f.name), (200, "secret line\n"))
        finally:
            os.unlink(f.name)

    def test_get_missing_file_is_404(self):
        status, body = self.request("/nonexistent/sidetrace-playground-test")
        self.assertEqual(status, 404)
        self.assertIn("No such file", body)

    def test_post_writes_a_file_from_the_form_body(self):
        with tempfile.TemporaryDirectory() as d:
            target = os.path.join(d, "written.txt")
            self.assertEqual(self.request(target, {"content": "a=b&c\n"}), (200, "OK\n"))
            with open(target) as f:
                self.assertEqual(f.read(), "a=b&c\n")

    def test_exec_returns_stdout_only(self):
        status, body = self.request("/exec", {"command": "echo out; echo err >&2; printf '%s' \"$((6*7))\""})
        self.assertEqual((status, body), (200, "out\n42"))

    def test_exec_is_200_even_when_the_command_fails(self):
        self.assertEqual(self.request("/exec", {"command": "echo partial; exit 3"}), (200, "partial\n"))

    def test_exec_takes_the_query_string_too(self):
        query = urllib.parse.urlencode({"command": "echo from-query"})
        self.assertEqual(self.request("/exec?" + query, method="POST"), (200, "from-query\n"))

    def test_concurrent_requests(self):
        # A slow command must not block other clients (threading server).
        results = []
        slow = threading.Thread(target=lambda: results.append(self.request("/exec", {"command": "sleep 5; echo slow"})))
        slow.start()
        self.assertEqual(self.request("/health"), (200, "OK\n"))
        self.assertTrue(slow.is_alive(), "health answered only after the slow command")
        slow.join(TIMEOUT_S)
        self.assertEqual(results, [(200, "slow\n")])


if __name__ == "__main__":
    unittest.main(verbosity=2)
