"""app.py as a user starts it: flags, loopback by default, optional login.

The login and upload-limit tests run the real `python app.py` process (tests/support/apprunner.py): its flags
and its start-up are the point; everything else uses the in-process `server` fixture."""

from __future__ import annotations

import pytest
import requests
from gradio_client import Client, handle_file
from gradio_client.exceptions import AuthenticationError

from app import parse_args, parse_auth
from clipapp.errors import ClipAppError
from tests.support.apprunner import running_app


def test_defaults_bind_loopback_port_7860():
    args = parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    assert args.session_ttl == "1d"


def test_auth_flag_parsing(monkeypatch):
    assert parse_auth("ann:s3cret:x") == ("ann", "s3cret:x")
    assert parse_auth(None) is None
    for bad in ("nopassword", ":x", "x:"):
        with pytest.raises(ClipAppError):
            parse_auth(bad)
    monkeypatch.setenv("CLIPAPP_AUTH", "bob:pw")
    assert parse_args([]).auth == "bob:pw"


@pytest.mark.server
@pytest.mark.slow
def test_login_is_required_when_auth_is_set(tiny_spec, photos, tmp_path):
    with running_app(["--model", tiny_spec, "--auth", "ann:s3cret", "--state-dir", str(tmp_path)]) as (_, url):
        with pytest.raises(AuthenticationError):
            Client(url, verbose=False)
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, auth=("ann", "wrong"), verbose=False)
        client = Client(url, auth=("ann", "s3cret"), verbose=False)
        result = client.predict([handle_file(str(photos[0]))], "a, b", "simple", "", 2, api_name="/classify")
        assert result["model"] == tiny_spec
        # The /v1 routes are not Gradio's: the same login protects them (HTTP basic).
        upload = {"images": (photos[0].name, photos[0].read_bytes(), "image/jpeg")}
        assert requests.post(url + "v1/classify", files=upload, data={"labels": "a, b"}).status_code == 401
        assert (
            requests.post(url + "v1/classify", files=upload, data={"labels": "a, b"}, auth=("ann", "wrong")).status_code
            == 401
        )
        answer = requests.post(url + "v1/classify", files=upload, data={"labels": "a, b"}, auth=("ann", "s3cret"))
        assert answer.status_code == 200 and answer.json()["results"][0]["image"] == photos[0].name
        assert requests.get(url + "health").json()["model_loaded"] is True


@pytest.mark.server
@pytest.mark.slow
def test_uploads_over_the_size_limit_are_refused(tiny_spec, photos, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(photos[0].read_bytes() + b"\x00" * 300_000)  # a valid image padded past the limit
    with running_app(["--model", tiny_spec, "--max-upload", "100kb", "--state-dir", str(tmp_path)]) as (_, url):
        client = Client(url, verbose=False)
        with pytest.raises(Exception, match="(?i)(too large|exceed|413|size)"):
            client.predict([handle_file(str(big))], "a, b", "simple", "", 2, api_name="/classify")
        result = client.predict([handle_file(str(photos[2]))], "a, b", "simple", "", 2, api_name="/classify")
        assert len(result["results"]) == 1


@pytest.mark.server
@pytest.mark.slow
def test_the_start_up_log_has_clipapps_lines_and_no_third_party_info(tiny_spec, tmp_path):
    """faiss's loader ("Could not load library with AVX512 support") and open_clip's INFO lines read like errors
    to a new user; clipapp's own INFO lines (the model loaded, the address) stay. --verbose brings them back."""
    with running_app(["--model", tiny_spec, "--state-dir", str(tmp_path)]) as (proc, _):
        pass
    log = proc.stdout.read()
    assert "INFO clipapp.model.loading: Loaded" in log and "Serving on http://" in log, log
    assert "faiss" not in log and "AVX" not in log, log
    assert not [line for line in log.splitlines() if " INFO " in line and " clipapp." not in line], log

    with running_app(["--model", tiny_spec, "--state-dir", str(tmp_path), "--verbose"]) as (proc, _):
        pass
    verbose = proc.stdout.read()
    assert "INFO faiss.loader" in verbose and "INFO root: Loaded" in verbose, verbose  # open_clip logs to root
