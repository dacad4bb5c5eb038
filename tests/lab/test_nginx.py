"""nginx as the lab runs it (real nginx, found or fetched from Debian's archive): it passes requests
to the service behind it, refuses a wrong ``$NGINX`` in one line, and leaves no process or folder."""

from __future__ import annotations

import http.server
import threading
import urllib.request
from pathlib import Path

import pytest

from healthz.harness.process import group_alive
from healthz.lab import nginx


def test_a_wrong_nginx_path_is_one_line_naming_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("NGINX", str(tmp_path / "nginx"))
    with pytest.raises(nginx.NginxError) as error:
        nginx.find_program()
    assert str(error.value) == f"NGINX={tmp_path / 'nginx'} is not an executable file"


def test_the_config_keeps_every_path_in_its_folder_and_buffers_requests(tmp_path):
    text = nginx.config(tmp_path, "127.0.0.1:8080", "127.0.0.1:8000")
    assert "proxy_request_buffering on;" in text and "server 127.0.0.1:8000;" in text
    paths = [word.rstrip(";") for word in text.split() if word.startswith("/") and word != "/"]  # "location /"
    assert paths and all(Path(p).is_relative_to(tmp_path) for p in paths)


@pytest.fixture
def upstream():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = self.headers.get("X-Forwarded-For", "").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_it_passes_requests_on_with_the_client_address_and_leaves_nothing(upstream):
    proxy = nginx.Nginx(upstream, "127.0.0.1").start()
    try:
        with urllib.request.urlopen(proxy.base_url + "/api/v1/healthz/", timeout=5) as answer:
            assert answer.status == 200 and answer.read() == b"127.0.0.1"
        pid, folder = proxy.child.pid, proxy.directory
    finally:
        proxy.stop()
    assert not group_alive(pid) and not folder.exists()
