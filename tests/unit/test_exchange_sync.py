"""Exchange sync against loopback fakes of the StopNCII and NCMEC APIs, called
through python-threatexchange's own clients."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator

import pytest

from moderation.errors import ConfigError, FatalError, TransientError
from moderation.exchanges.client import ExchangeRejected
from moderation.exchanges.ncmec import NCMECExchange
from moderation.exchanges.stopncii import StopNCIIExchange, parse_source_ref
from moderation.exchanges.sync import (
    Feedback,
    FeedbackResult,
    FeedbackStatus,
    SyncResult,
    send_pending_feedback,
    sync_exchange,
    sync_feedback,
)
from tests.support.exchange_servers import InMemoryExchangeStore, NCMECServer, StopNCIIServer


def _pdq(i: int) -> str:
    return hashlib.sha256(f"pdq-{i}".encode()).hexdigest()


def _md5(i: int) -> str:
    return hashlib.md5(f"md5-{i}".encode()).hexdigest()


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def stopncii_server() -> Iterator[StopNCIIServer]:
    with StopNCIIServer() as server:
        assert isinstance(server, StopNCIIServer)
        yield server


@pytest.fixture
def ncmec_server() -> Iterator[NCMECServer]:
    with NCMECServer() as server:
        assert isinstance(server, NCMECServer)
        yield server


def _stopncii(server: StopNCIIServer, **overrides: object) -> StopNCIIExchange:
    options: dict[str, object] = {
        "subscription_key": "sub-key",
        "fetch_function_key": "fetch-key",
        "feedback_function_key": "fb-key",
        "base_url": server.url,
        "page_size": 2,
        "retries": 0,
        "backoff_s": 0,
        "timeout_s": 5,
        "clock": lambda: server.now,
    }
    options.update(overrides)
    return StopNCIIExchange(**options)  # type: ignore[arg-type]


def _fetches(server: StopNCIIServer) -> list[dict[str, str]]:
    return [r.query for r in server.requests if r.path == "/v1/FetchHashes"]


# -- StopNCII -----------------------------------------------------------------------------------------
def test_stopncii_incremental_sync_across_two_runs(stopncii_server: StopNCIIServer) -> None:
    server, store = stopncii_server, InMemoryExchangeStore()
    server.add(_pdq(0), ts=100, cases={"c-1": "Active", "c-2": "Received"})
    server.add(_pdq(1), ts=200)
    server.add(_md5(2), signal_type="VideoMD5", ts=300)
    client = _stopncii(server)

    first = sync_exchange(client, store, "stopncii")

    assert (first.added, first.updated, first.withdrawn, first.batches) == (3, 0, 0, 2)
    assert json.loads(first.checkpoint or "") == {"v": 1, "start": server.now}
    assert store.get_checkpoint("stopncii") == first.checkpoint
    fetches = _fetches(server)
    assert fetches[0] == {"startTimestamp": "10", "pageSize": "2"}
    assert fetches[1]["startTimestamp"] == "10" and fetches[1]["nextPageToken"]
    for request in server.requests:
        assert request.headers["ocp-apim-subscription-key"] == "sub-key"
        assert request.headers["x-functions-key"] == "fetch-key"
    bank = store.bank("stopncii")
    entry = bank["pdq", _pdq(0)]
    assert (entry.source_ref, entry.case_id, entry.added_by) == (f"ImagePDQ:{_pdq(0)}", "c-1,c-2", "stopncii")
    assert bank["md5", _md5(2)].source_ref == f"VideoMD5:{_md5(2)}"

    # Second run: only what changed since the stored checkpoint.
    first_end = server.now
    server.now += 1000
    server.requests.clear()
    server.add(_pdq(3))
    server.set_status(_pdq(0), "Withdrawn")
    server.set_status(_pdq(1), "Active", cases="Deleted")  # every case withdrawn: so is the hash

    second = sync_exchange(client, store, "stopncii")

    assert _fetches(server)[0] == {"startTimestamp": str(first_end), "pageSize": "2"}
    assert (second.added, second.updated, second.withdrawn, second.batches) == (1, 0, 2, 2)
    statuses = {key: row.status for key, row in store.bank("stopncii").items()}
    assert statuses == {
        ("pdq", _pdq(0)): "withdrawn",
        ("pdq", _pdq(1)): "withdrawn",
        ("md5", _md5(2)): "active",
        ("pdq", _pdq(3)): "active",
    }

    # A withdrawn hash that comes back (a new case) is active again.
    server.now += 1000
    server.set_status(_pdq(0), "Active", cases="Active")
    third = sync_exchange(client, store, "stopncii")
    assert (third.added, third.updated, third.withdrawn) == (0, 1, 0)
    assert store.bank("stopncii")["pdq", _pdq(0)].status == "active"


def test_stopncii_feedback_blocked_and_not_blocked(stopncii_server: StopNCIIServer) -> None:
    server, store = stopncii_server, InMemoryExchangeStore()
    server.refuse_feedback_for = {_md5(9)}
    blocked = store.add_feedback("stopncii", f"ImagePDQ:{_pdq(0)}", True)
    not_blocked = store.add_feedback("stopncii", f"ImagePDQ:{_pdq(1)}", False)
    repeat = store.add_feedback("stopncii", f"ImagePDQ:{_pdq(0)}", True)
    unknown = store.add_feedback("stopncii", f"VideoMD5:{_md5(9)}", True)
    garbage = store.add_feedback("stopncii", "not-a-ref", False)

    result = sync_feedback(_stopncii(server), store)

    assert result == FeedbackResult(sent=3, rejected=2, deferred=0)
    assert server.feedback == [
        {"count": 1, "hashFeedbacks": [{"tags": [], "feedbackValue": "Blocked", "hashValue": _pdq(0)}]},
        {"count": 1, "hashFeedbacks": [{"tags": [], "feedbackValue": "NotBlocked", "hashValue": _pdq(1)}]},
    ]
    posts = [r for r in server.requests if r.method == "POST"]
    assert [r.path for r in posts] == ["/v1/SubmitFeedback"] * 3  # the repeat is not resent
    assert all(r.headers["x-functions-key"] == "fb-key" for r in posts)
    assert all(r.headers["ocp-apim-subscription-key"] == "sub-key" for r in posts)
    for row_id in (blocked, not_blocked, repeat):
        assert store.feedback_state(row_id) == ("sent", "")
    assert store.feedback_state(unknown)[0] == "rejected" and "HTTP 400" in store.feedback_state(unknown)[1]
    assert store.feedback_state(garbage)[0] == "rejected"
    assert store.pending_feedback("stopncii", 10) == []


def test_stopncii_feedback_stops_on_outage_and_keeps_what_was_sent(stopncii_server: StopNCIIServer) -> None:
    server, store = stopncii_server, InMemoryExchangeStore()
    server.feedback_response = b""  # a 2xx without JSON still counts as delivered
    first = store.add_feedback("stopncii", f"ImagePDQ:{_pdq(0)}", True)
    second = store.add_feedback("stopncii", f"ImagePDQ:{_pdq(1)}", True)
    third = store.add_feedback("stopncii", f"ImagePDQ:{_pdq(2)}", False)
    client = _stopncii(server)
    client.send_feedback(f"ImagePDQ:{_pdq(0)}", True)  # warm-up: the empty body is fine
    server.feedback.clear()

    outcomes = send_pending_feedback(client, store.pending_feedback("stopncii", 10))
    assert [o.status for o in outcomes] == [FeedbackStatus.SENT] * 3

    server.fail_next(503, times=1)
    with pytest.raises(TransientError):
        sync_feedback(client, store)
    assert [store.feedback_state(i)[0] for i in (first, second, third)] == ["pending"] * 3

    # Sent rows stay marked when a later row hits the outage.
    server.requests.clear()
    pending = store.pending_feedback("stopncii", 10)
    outcomes = send_pending_feedback(client, pending[:1])
    store.mark_feedback_sent([o.feedback.id for o in outcomes])
    server.fail_next(502)
    with pytest.raises(TransientError):
        sync_feedback(client, store)
    assert [store.feedback_state(i)[0] for i in (first, second, third)] == ["sent", "pending", "pending"]
    assert len([r for r in server.requests if r.method == "POST"]) == 2  # stopped at the first failure


def test_stopncii_feedback_credentials(stopncii_server: StopNCIIServer) -> None:
    store = InMemoryExchangeStore()
    store.add_feedback("stopncii", f"ImagePDQ:{_pdq(0)}", True)
    with pytest.raises(ConfigError, match="STOPNCII_FEEDBACK_FUNCTION_KEY"):
        sync_feedback(_stopncii(stopncii_server, feedback_function_key=""), store)
    with pytest.raises(ConfigError, match="HTTP 401.*STOPNCII_FEEDBACK_FUNCTION_KEY"):
        sync_feedback(_stopncii(stopncii_server, feedback_function_key="wrong"), store)
    assert store.pending_feedback("stopncii", 10) != []


def test_stopncii_5xx_is_transient_and_keeps_the_checkpoint(stopncii_server: StopNCIIServer) -> None:
    server, store = stopncii_server, InMemoryExchangeStore()
    server.add(_pdq(0), ts=100)
    client = _stopncii(server)
    sync_exchange(client, store, "stopncii")
    before = store.get_checkpoint("stopncii")

    server.now += 1000
    server.add(_pdq(1))
    server.fail_next(503)
    with pytest.raises(TransientError, match="HTTP 503"):
        sync_exchange(client, store, "stopncii")
    assert store.get_checkpoint("stopncii") == before
    assert ("pdq", _pdq(1)) not in store.bank("stopncii")

    # A brief blip is absorbed by the client's retries.
    server.fail_next(500, times=2)
    result = sync_exchange(_stopncii(server, retries=2), store, "stopncii")
    assert result.added == 1


def test_stopncii_failure_mid_paging_resumes_from_the_page_token(stopncii_server: StopNCIIServer) -> None:
    server, store = stopncii_server, InMemoryExchangeStore()
    for i in range(5):
        server.add(_pdq(i), ts=100 + i)
    client = _stopncii(server)
    seen: list[SyncResult] = []

    def fail_after_first_batch(totals: SyncResult) -> None:
        seen.append(totals)
        server.fail_next(503)

    with pytest.raises(TransientError):
        sync_exchange(client, store, "stopncii", progress=fail_after_first_batch)
    assert [s.added for s in seen] == [2]
    stored = json.loads(store.get_checkpoint("stopncii") or "")
    assert stored["start"] == 10 and stored["token"]

    server.requests.clear()
    result = sync_exchange(client, store, "stopncii")
    assert _fetches(server)[0]["nextPageToken"] == stored["token"]
    assert (result.added, len(store.bank("stopncii"))) == (3, 5)


def test_stopncii_expired_or_refused_page_tokens_restart_the_fetch(stopncii_server: StopNCIIServer) -> None:
    server, store = stopncii_server, InMemoryExchangeStore()
    for i in range(3):
        server.add(_pdq(i), ts=100 + i)
    client = _stopncii(server)
    store.checkpoints["stopncii"] = json.dumps(
        {"v": 1, "start": 50, "token": "stale", "token_at": server.now}
    )
    sync_exchange(client, store, "stopncii")
    queries = _fetches(server)
    assert queries[0]["nextPageToken"] == "stale" and "nextPageToken" not in queries[1]
    assert len(store.bank("stopncii")) == 3

    server.requests.clear()
    store.checkpoints["stopncii"] = json.dumps(
        {"v": 1, "start": 50, "token": "old", "token_at": server.now - 7200}
    )
    sync_exchange(client, store, "stopncii")
    assert "nextPageToken" not in _fetches(server)[0]  # over an hour old: not even tried


def test_stopncii_401_names_the_settings(stopncii_server: StopNCIIServer) -> None:
    store = InMemoryExchangeStore()
    with pytest.raises(ConfigError) as caught:
        sync_exchange(_stopncii(stopncii_server, fetch_function_key="wrong"), store, "stopncii")
    assert "HTTP 401" in str(caught.value)
    assert "STOPNCII_SUBSCRIPTION_KEY and STOPNCII_FETCH_FUNCTION_KEY" in str(caught.value)
    assert store.get_checkpoint("stopncii") is None
    with pytest.raises(ConfigError, match="STOPNCII_FETCH_FUNCTION_KEY"):
        _stopncii(stopncii_server, fetch_function_key="")
    with pytest.raises(ConfigError, match="STOPNCII_API_URL"):
        sync_exchange(_stopncii(stopncii_server, base_url=stopncii_server.root + "/v9"), store, "stopncii")


def test_stopncii_malformed_records_are_skipped_and_counted(
    stopncii_server: StopNCIIServer, caplog: pytest.LogCaptureFixture
) -> None:
    server, store = stopncii_server, InMemoryExchangeStore()
    server.add(_pdq(0), ts=100)
    server.add("not-a-pdq-hash", ts=101)
    server.add("some text", signal_type="Text", ts=102)
    record = {"lastModtimestamp": 103, "signalType": "ImagePDQ", "hashValue": _pdq(1)}
    server.add_raw("bad-status", {**record, "hashStatus": "Exploded", "caseNumbers": {}})
    caplog.set_level(logging.WARNING)

    result = sync_exchange(_stopncii(server, page_size=10), store, "stopncii")

    assert (result.added, result.skipped, result.ignored) == (1, 2, 1)
    assert set(store.bank("stopncii")) == {("pdq", _pdq(0))}
    assert "not-a-pdq-hash" in caplog.text and "malformed" in caplog.text


def test_stopncii_non_json_success_is_transient(stopncii_server: StopNCIIServer) -> None:
    stopncii_server.fail_next(200, body="<html>maintenance</html>")
    with pytest.raises(TransientError, match="not JSON"):
        sync_exchange(_stopncii(stopncii_server), InMemoryExchangeStore(), "stopncii")


def test_stopncii_source_refs() -> None:
    signal_type, value = parse_source_ref(f"ImagePDQ:{_pdq(0)}")
    assert (signal_type.value, value) == ("ImagePDQ", _pdq(0))
    for bad in ("", "ImagePDQ:", "Photo:abc", _pdq(0)):
        with pytest.raises(ExchangeRejected):
            parse_source_ref(bad)


# -- NCMEC --------------------------------------------------------------------------------------------
T0 = 1_600_000_000  # 2020-09-13T12:26:40Z


def _ncmec(server: NCMECServer, now: list[int], **overrides: object) -> NCMECExchange:
    options: dict[str, object] = {
        "username": "esp-user",
        "password": "esp-pass",
        "base_url": server.url,
        "start_timestamp": T0,
        "retries": 0,
        "backoff_s": 0,
        "timeout_s": 5,
        "clock": lambda: now[0],
    }
    options.update(overrides)
    return NCMECExchange(**options)  # type: ignore[arg-type]


def _utc(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def test_ncmec_paging_and_deletions(ncmec_server: NCMECServer) -> None:
    server, store, now = ncmec_server, InMemoryExchangeStore(), [T0 + 1000]
    server.add("img1", T0 + 10, fingerprints={"md5": _md5(1).upper(), "pdq": _pdq(1), "sha1": "ab" * 20})
    server.add("vid1", T0 + 20, kind="video", fingerprints={"md5": _md5(2)})
    server.add("img2", T0 + 30, fingerprints={"pdna": "12,34"})  # nothing we bank
    server.add("img3", T0 + 40, member_id=7, fingerprints={"md5": _md5(3)}, classification="B1")
    client = _ncmec(server, now)

    first = sync_exchange(client, store, "ncmec")

    assert (first.added, first.withdrawn, first.ignored, first.batches) == (4, 0, 1, 2)
    assert json.loads(first.checkpoint or "") == {"v": 1, "from": now[0] - 5}
    first_query, second_query = (r.query for r in server.requests)
    assert first_query == {"from": _utc(T0), "to": _utc(now[0] - 5)}
    assert second_query["start"] == "3" and second_query["from"] == _utc(T0)
    assert all(r.headers["authorization"].startswith("Basic ") for r in server.requests)
    bank = store.bank("ncmec")
    assert set(bank) == {("md5", _md5(1)), ("pdq", _pdq(1)), ("md5", _md5(2)), ("md5", _md5(3))}
    img1 = bank["pdq", _pdq(1)]
    assert (img1.source_ref, img1.case_id, img1.added_by) == ("42-img1", "img1", "ncmec")
    assert bank["md5", _md5(3)].note == "NCMEC image from member 7, classification B1"

    # Second run: from where the first stopped; a tombstone withdraws every fingerprint of its entry.
    server.requests.clear()
    previous_end, now[0] = now[0] - 5, now[0] + 1000
    server.delete("img1", previous_end + 10)
    server.add("img4", previous_end + 20, fingerprints={"pdq": _pdq(4)})

    second = sync_exchange(client, store, "ncmec")

    assert server.requests[0].query == {"from": _utc(previous_end), "to": _utc(now[0] - 5)}
    assert (second.added, second.withdrawn, second.batches) == (1, 2, 1)
    bank = store.bank("ncmec")
    assert bank["md5", _md5(1)].status == bank["pdq", _pdq(1)].status == "withdrawn"
    assert bank["md5", _md5(2)].status == "active"


def test_ncmec_member_filter(ncmec_server: NCMECServer) -> None:
    server, store = ncmec_server, InMemoryExchangeStore()
    server.add("mine", T0 + 1, member_id=7, fingerprints={"md5": _md5(1)})
    server.add("theirs", T0 + 2, member_id=8, fingerprints={"md5": _md5(2)})
    result = sync_exchange(_ncmec(server, [T0 + 1000], only_member_ids={7}), store, "ncmec")
    assert (result.added, result.ignored) == (1, 1)
    assert set(store.bank("ncmec")) == {("md5", _md5(1))}


def test_ncmec_failure_mid_window_resumes_from_the_paging_url(ncmec_server: NCMECServer) -> None:
    server, store, now = ncmec_server, InMemoryExchangeStore(), [T0 + 1000]
    for i in range(5):
        server.add(f"img{i}", T0 + i, fingerprints={"md5": _md5(i)})
    client = _ncmec(server, now)

    with pytest.raises(TransientError, match="HTTP 500"):
        sync_exchange(client, store, "ncmec", progress=lambda _: server.fail_next(500))
    stored = json.loads(store.get_checkpoint("ncmec") or "")
    assert stored["from"] == T0 and stored["to"] == now[0] - 5 and "start=3" in stored["next"]
    assert len(store.bank("ncmec")) == 2

    server.requests.clear()
    now[0] += 60
    result = sync_exchange(client, store, "ncmec")
    assert server.requests[0].query["start"] == "3"  # the stored paging URL, same window
    assert server.requests[0].query["to"] == _utc(stored["to"])
    assert (result.added, len(store.bank("ncmec"))) == (3, 5)
    assert json.loads(result.checkpoint or "") == {"v": 1, "from": now[0] - 5}


def test_ncmec_reads_long_ranges_in_windows(ncmec_server: NCMECServer) -> None:
    server, store, now = ncmec_server, InMemoryExchangeStore(), [T0 + 1000]
    server.add("early", T0 + 5, fingerprints={"md5": _md5(0)})
    server.add("late", T0 + 900, fingerprints={"md5": _md5(1)})
    result = sync_exchange(_ncmec(server, now, window_s=400), store, "ncmec")
    windows = [(r.query["from"], r.query["to"]) for r in server.requests]
    assert windows == [
        (_utc(T0), _utc(T0 + 400)),
        (_utc(T0 + 400), _utc(T0 + 800)),
        (_utc(T0 + 800), _utc(T0 + 995)),
    ]
    assert (result.added, result.batches) == (2, 3)


def test_ncmec_sends_utc_times_whatever_the_local_zone(
    ncmec_server: NCMECServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        sync_exchange(_ncmec(ncmec_server, [T0 + 1000]), InMemoryExchangeStore(), "ncmec")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert ncmec_server.requests[0].query["from"] == "2020-09-13T12:26:40Z"


def test_ncmec_errors(ncmec_server: NCMECServer) -> None:
    store, now = InMemoryExchangeStore(), [T0 + 1000]
    with pytest.raises(ConfigError, match="HTTP 401.*NCMEC_USERNAME and NCMEC_PASSWORD"):
        sync_exchange(_ncmec(ncmec_server, now, password="wrong"), store, "ncmec")
    with pytest.raises(ConfigError, match="NCMEC_PASSWORD"):
        _ncmec(ncmec_server, now, password="")
    ncmec_server.fail_next(503)
    with pytest.raises(TransientError):
        sync_exchange(_ncmec(ncmec_server, now), store, "ncmec")
    ncmec_server.fail_next(200, body="<queryResult")
    with pytest.raises(TransientError, match="not XML"):
        sync_exchange(_ncmec(ncmec_server, now), store, "ncmec")
    assert store.get_checkpoint("ncmec") is None


def test_ncmec_malformed_records_are_skipped_and_counted(
    ncmec_server: NCMECServer, caplog: pytest.LogCaptureFixture
) -> None:
    server, store = ncmec_server, InMemoryExchangeStore()
    server.page_size = 10
    server.add("good", T0 + 1, fingerprints={"md5": _md5(0)})
    server.add("badpdq", T0 + 2, fingerprints={"pdq": "zz"})
    server.raw_entries.append(("images", T0 + 3, '<image><member id="42">M</member><timestamp/></image>'))
    server.raw_entries.append(
        ("images", T0 + 4, '<hologram><member id="42">M</member><id>h1</id></hologram>')
    )
    caplog.set_level(logging.WARNING)

    result = sync_exchange(_ncmec(server, [T0 + 1000]), store, "ncmec")

    assert (result.added, result.skipped) == (1, 3)
    assert set(store.bank("ncmec")) == {("md5", _md5(0))}
    assert "NCMEC record skipped" in caplog.text


# -- the sync loop ------------------------------------------------------------------------------------
def test_store_failure_leaves_no_checkpoint(stopncii_server: StopNCIIServer) -> None:
    stopncii_server.add(_pdq(0), ts=100)
    store = InMemoryExchangeStore(fail_apply=True)
    with pytest.raises(TransientError, match="database"):
        sync_exchange(_stopncii(stopncii_server), store, "stopncii")
    assert store.get_checkpoint("stopncii") is None and store.entries == {}


def test_unreadable_checkpoint_is_fatal(stopncii_server: StopNCIIServer, ncmec_server: NCMECServer) -> None:
    store = InMemoryExchangeStore(checkpoints={"stopncii": "{oops", "ncmec": '{"v": 1}'})
    with pytest.raises(FatalError, match="checkpoint"):
        sync_exchange(_stopncii(stopncii_server), store, "stopncii")
    with pytest.raises(FatalError, match="checkpoint"):
        sync_exchange(_ncmec(ncmec_server, [T0 + 1000]), store, "ncmec")


def test_feedback_outcomes_keep_input_order() -> None:
    class Flaky:
        name = "fake"

        def __init__(self) -> None:
            self.sent: list[str] = []

        def fetch_updates(self, checkpoint: str | None) -> Iterator[object]:
            return iter(())

        def send_feedback(self, source_ref: str, blocked: bool, *, tags: object = ()) -> None:
            if source_ref == "bad":
                raise ExchangeRejected("unknown hash")
            if source_ref == "down":
                raise TransientError("exchange down")
            self.sent.append(source_ref)

    rows = [
        Feedback(1, "a", True),
        Feedback(2, "bad", True),
        Feedback(3, "down", False),
        Feedback(4, "b", True),
    ]
    client = Flaky()
    outcomes = send_pending_feedback(client, rows)  # type: ignore[arg-type]
    assert [(o.feedback.id, o.status) for o in outcomes] == [
        (1, FeedbackStatus.SENT),
        (2, FeedbackStatus.REJECTED),
        (3, FeedbackStatus.DEFERRED),
        (4, FeedbackStatus.DEFERRED),
    ]
    assert isinstance(outcomes[2].cause, TransientError) and outcomes[3].cause is None
    assert client.sent == ["a"]


def test_an_unreadable_stored_checkpoint_says_how_to_recover(stopncii_server: StopNCIIServer) -> None:
    with pytest.raises(FatalError, match="StopNCII checkpoint is unreadable.*reset it to resync"):
        list(_stopncii(stopncii_server).fetch_updates("not json"))
