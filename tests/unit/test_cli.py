from __future__ import annotations

import json

from moderation.cli import main
from tests.support.images import encode, synthetic_image


def test_hash_prints_one_json_object_per_file(tmp_path, capsys):
    a, b = tmp_path / "a.jpg", tmp_path / "b.png"
    a.write_bytes(encode(synthetic_image(1)))
    b.write_bytes(encode(synthetic_image(2), ".png"))
    assert main(["hash", "--json", str(a), str(b)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in rows] == [str(a), str(b)]
    for r in rows:
        assert set(r) == {"path", "sha256", "md5", "pdq", "pdq_quality"}
        assert len(r["sha256"]) == 64 and len(r["md5"]) == 32 and len(r["pdq"]) == 64
        assert 0 <= r["pdq_quality"] <= 100


def test_hash_reports_bad_files_and_carries_on(tmp_path, capsys):
    good, junk = tmp_path / "good.jpg", tmp_path / "junk.jpg"
    good.write_bytes(encode(synthetic_image(1)))
    junk.write_bytes(b"not an image")
    assert main(["hash", "--json", str(junk), str(tmp_path / "missing.jpg"), str(good)]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["path"] == str(good)
    errors = [json.loads(line) for line in err.splitlines()]
    assert errors[0]["error_class"] == "media_undecodable"
    assert errors[1]["path"].endswith("missing.jpg") and errors[1]["error"]


def test_user_create_and_db_upgrade_on_sqlite(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    assert main(["db", "upgrade"]) == 0
    assert main(["user", "create", "alex", "--role", "admin"]) == 0
    out = capsys.readouterr().out
    assert "created admin 'alex'" in out and "password (shown once): " in out
    assert main(["user", "create", "alex"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_bad_configuration_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("REVIEW_THRESHOLD", "high")
    assert main(["db", "upgrade"]) == 2
    assert "REVIEW_THRESHOLD='high'" in capsys.readouterr().err


def test_user_password_lockout_and_deactivation_from_the_shell(tmp_path, monkeypatch, capsys):
    import io

    from moderation.cli import main
    from moderation.storage.db import open_sessions
    from moderation.storage.users import authenticate, get_user

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/users.db")
    monkeypatch.setattr("sys.stdin", io.StringIO("first-password-123\n"))
    assert main(["user", "create", "mia", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("second-password-456\n"))
    assert main(["user", "set-password", "mia", "--password-stdin"]) == 0
    with open_sessions(f"sqlite:///{tmp_path}/users.db") as sessions, sessions() as s:
        assert authenticate(s, "mia", "second-password-456") is not None
        assert authenticate(s, "mia", "first-password-123") is None
        user = get_user(s, "mia")
        user.failed_logins, version = 9, user.session_version
        s.commit()
    assert main(["user", "unlock", "mia"]) == 0
    assert main(["user", "deactivate", "mia"]) == 0
    with open_sessions(f"sqlite:///{tmp_path}/users.db") as sessions, sessions() as s:
        user = get_user(s, "mia")
        assert (user.failed_logins, user.active) == (0, False)
        assert user.session_version > version  # open sessions end
        assert authenticate(s, "mia", "second-password-456") is None
    assert main(["user", "activate", "mia"]) == 0
    assert main(["user", "unlock", "nobody"]) == 1
    assert "no user 'nobody'" in capsys.readouterr().err


def test_an_admin_creates_a_personal_review_token_for_a_user(tmp_path, monkeypatch, capsys):
    import io
    import re

    from moderation.storage import tokens
    from moderation.storage.db import open_sessions
    from moderation.storage.users import get_user

    url = f"sqlite:///{tmp_path}/tokens.db"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setattr("sys.stdin", io.StringIO("first-password-123\n"))
    assert main(["user", "create", "mia", "--password-stdin"]) == 0
    capsys.readouterr()
    assert main(["token", "create", "mia-script", "--user", "mia", "--scopes", "review"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[0]) == {
        "name": "mia-script",
        "scopes": ["review"],
        "bank": None,
        "user": "mia",
    }
    secret = re.search(r"token \(shown once\): (mod_\S+)", out).group(1)
    with open_sessions(url) as sessions, sessions() as s:
        token = tokens.authenticate(s, secret)
        assert token is not None and token.user_id == get_user(s, "mia").id
    assert main(["token", "create", "loose", "--scope", "review"]) == 1
    assert "acts as a user" in capsys.readouterr().err
    assert main(["token", "create", "ghost", "--user", "nobody", "--scope", "review"]) == 1
    assert "no user 'nobody'" in capsys.readouterr().err
    assert main(["token", "create", "mixed", "--user", "mia", "--scopes", "review,banks:read"]) == 1
    assert "review scope only" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("second-password-456\n"))
    assert main(["user", "set-password", "mia", "--password-stdin"]) == 0
    with open_sessions(url) as sessions, sessions() as s:
        assert tokens.authenticate(s, secret) is None  # a new password revokes her tokens
