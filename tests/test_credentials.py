"""Credentials at start-up: the GKE metadata server may not answer in a pod's first seconds
(Workload Identity). The trainer retries, within a bound, then names what Workload Identity
needs. A metadata server on loopback stands in for GKE's (the real google-auth client talks
to it); the bucket is the GCS emulator."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import run_trainer
from trainer import contract


class FakeMetadata(ThreadingHTTPServer):
    """GCE's metadata server, as google-auth uses it: a ping, the service account, a token.
    The first `fail` requests get a 503 without the Metadata-Flavor header, as a metadata
    server that is not up yet answers (or does not)."""

    def __init__(self, fail: int):
        self.fail, self.requests = fail, []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's naming)
        server: FakeMetadata = self.server  # type: ignore[assignment]
        server.requests.append(self.path)
        if len(server.requests) <= server.fail:
            self.send_response(503)
            self.end_headers()
            return
        if self.path.endswith("/token") or "/token?" in self.path:
            body = {"access_token": "fake-token", "expires_in": 3600, "token_type": "Bearer"}
        elif "service-accounts/default" in self.path:
            body = {"email": "trainer@imdb-train.iam.gserviceaccount.com", "aliases": ["default"],
                    "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}  # fmt: skip
        elif self.path.endswith("project-id"):
            body = "imdb-train"
        elif self.path.endswith("universe-domain"):
            body = "googleapis.com"
        else:
            body = ""
        text = isinstance(body, str)
        data = (body if text else json.dumps(body)).encode()
        self.send_response(200)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", "text/plain" if text else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def metadata(request):
    server = FakeMetadata(fail=request.param)
    yield server
    server.shutdown()


def _env(gcs_emulator, metadata: FakeMetadata, deadline: str) -> dict:
    return {
        "STORAGE_EMULATOR_HOST": gcs_emulator,
        "GCE_METADATA_HOST": metadata.host,
        "GCE_METADATA_IP": metadata.host,
        "GCE_METADATA_DETECT_RETRIES": "1",
        contract.GCS_DEADLINE_ENV: deadline,
    }


@pytest.mark.parametrize("metadata", [4], indirect=True)
def test_a_slow_metadata_server_is_waited_for(gcs_bucket, gcs_emulator, metadata, tmp_path):
    # Past the credentials the probe write succeeds; the missing data then ends the run.
    args = ["--output", f"gs://{gcs_bucket}/imdb", "--data", str(tmp_path / "none.tar.gz")]
    proc = run_trainer(args, timeout=120, **_env(gcs_emulator, metadata, "20"))
    assert proc.returncode == contract.EXIT_BAD_INPUT, proc.stderr
    assert "none.tar.gz' does not exist" in proc.stderr, proc.stderr
    assert sum(p.endswith("/token") or "/token?" in p for p in metadata.requests) >= 1


@pytest.mark.parametrize("metadata", [10**6], indirect=True)
def test_no_credentials_is_one_line_naming_workload_identity(gcs_bucket, gcs_emulator, metadata):
    """Credentials that never come are an outage of the metadata server, not bad input:
    exit 75 (the Job retries; GKE's metadata server can lag a pod's start), one line."""
    proc = run_trainer(["--output", f"gs://{gcs_bucket}/imdb"], timeout=120,
                       **_env(gcs_emulator, metadata, "3"))  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == contract.EXIT_PREEMPTED, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("stopped, resumable: cannot get Google cred")
    assert "iam.gke.io/gcp-service-account" in lines[0]
    # the direct principal, as the walk-through grants it, is named too
    assert "principal://iam.googleapis.com/projects/PROJECT_NUMBER/" in lines[0]
    assert len(metadata.requests) >= 2  # it asked again before giving up
