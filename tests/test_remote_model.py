"""Remote objects from HTTP heads (roar/record/remote.py): identities, versions,
pairing of requests and responses, credentials never kept, hashes only where
the record shows them, and network peers whose traffic could not be read."""

from __future__ import annotations

from roar.record import remote as R


def _req(method, target, host, **headers) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _resp(status, **headers) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


AUTH = {"Authorization": "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/x, Signature=f00d",
        "x_amz_date": "20261130T000000Z"}


def _exchange(log, method, target, host, status, req_headers=None, resp_headers=None,
              body_out=0, body_in=0, ssl=1, pid="p@1"):
    raw = _req(method, target, host, **(req_headers or {}))
    log.request(1, pid, ssl, raw, len(raw) + body_out, 0, 0, 0)
    head = _resp(status, **(resp_headers or {}))
    log.response(1, ssl, head, len(head) + body_in, 0, 0)


def test_identities_follow_the_stores_naming_and_drop_credentials():
    vhost = R.identity("https", "bkt.s3.us-east-1.amazonaws.com", "/a/b.bin?versionId=7", {})
    assert vhost["url"] == "s3://bkt/a/b.bin" and vhost["params"] == {"versionId": "7"}
    path_style = R.identity("https", "127.0.0.1:9000", "/bkt/key%20x",
                            {k.lower().replace("_", "-"): v for k, v in AUTH.items()})
    assert path_style["url"] == "s3://bkt/key x"
    assert path_style["endpoint"] == "https://127.0.0.1:9000"
    gcs = R.identity("https", "storage.googleapis.com", "/bkt/o.txt", {})
    assert gcs["url"] == "gs://bkt/o.txt"
    api = R.identity("https", "storage.googleapis.com",
                     "/download/storage/v1/b/bkt/o/dir%2Fo.txt?alt=media", {})
    assert api["url"] == "gs://bkt/dir/o.txt"
    signed = R.identity("https", "example.org",
                        "/f.bin?X-Amz-Signature=abc&X-Amz-Credential=AKIA&keep=1&sig=zz", {})
    assert signed["url"] == "https://example.org/f.bin?keep=1"
    hf = R.identity("https", "huggingface.co", "/org/model/resolve/main/config.json", {})
    assert hf["store"] == "huggingface" and hf["url"].endswith("/resolve/main/config.json")
    # a plain GET to a server that is not S3 keeps its URL
    assert R.identity("https", "h:8443", "/bkt/key", {})["url"] == "https://h:8443/bkt/key"


def test_references_are_named_like_records():
    assert R.normalize_ref("https://bkt.s3.amazonaws.com/k") == "s3://bkt/k"
    assert R.normalize_ref("https://u:pw@example.org/f?token=x&a=1") == \
        "https://example.org/f?a=1"
    assert R.normalize_ref("S3://bkt/k") == "s3://bkt/k"
    assert R.is_url("gs://b/k") and not R.is_url("/tmp/x") and not R.is_url("ab12")


def test_versions_most_specific_first():
    assert R.version_of({"x-amz-version-id": "v9", "etag": '"e"'}, 3) == "s3:v9"
    assert R.version_of({"x-amz-version-id": "null", "etag": '"e1"'}, 3) == "etag:e1"
    assert R.version_of({"x-goog-generation": "17"}, 3) == "gcs:17"
    assert R.version_of({"x-repo-commit": "abc", "x-linked-etag": '"l"'}, 3) == "commit:abc"
    assert R.version_of({"etag": 'W/"weak"'}, 3) == "etag:weak"
    assert R.version_of({"last-modified": "Mon"}, 3) == "modified:Mon;size=3"
    assert R.version_of({}, 3) is None


def test_gets_are_inputs_puts_outputs_with_sizes_and_body_bytes():
    log = R.RemoteLog()
    _exchange(log, "GET", "/bkt/a", "h", 200, AUTH,
              {"x-amz-version-id": "v1", "Content-Length": "100"}, body_in=100)
    _exchange(log, "PUT", "/bkt/b", "h", 200, {**AUTH, "Content-Length": "50"},
              {"ETag": '"e2"'}, body_out=50, ssl=2)
    _exchange(log, "GET", "/bkt/missing", "h", 404, AUTH, {}, ssl=3)
    recs, telemetry = log.objects()
    by = {r["url"]: r for r in recs}
    assert set(by) == {"s3://bkt/a", "s3://bkt/b"}  # a 404 names no object
    a, b = by["s3://bkt/a"], by["s3://bkt/b"]
    assert (a["role"], a["version"], a["size"], a["bytes_read"]) == ("input", "s3:v1", 100, 100)
    assert (b["role"], b["version"], b["size"], b["bytes_written"]) == ("output", "etag:e2",
                                                                         50, 50)
    assert a["ident"] == R.ident_key("s3://bkt/a", "s3:v1") and a["hash"] is None
    assert telemetry == []


def test_ranged_gets_of_one_version_are_one_input():
    log = R.RemoteLog()
    for i, rng in enumerate(("bytes=0-9", "bytes=10-19")):
        _exchange(log, "GET", "/bkt/big", "h", 206, {**AUTH, "Range": rng},
                  {"Content-Range": f"bytes {i * 10}-{i * 10 + 9}/20", "ETag": '"e"'},
                  body_in=10, ssl=i + 1)
    (rec,), _ = log.objects()
    assert rec["size"] == 20 and rec["bytes_read"] == 20
    assert rec["ranges"] == ["bytes=0-9", "bytes=10-19"]


def test_multipart_upload_is_one_output():
    log = R.RemoteLog()
    _exchange(log, "POST", "/bkt/m?uploads", "h", 200, AUTH, {})
    for n in (1, 2):
        _exchange(log, "PUT", f"/bkt/m?partNumber={n}&uploadId=U", "h", 200,
                  {**AUTH, "Content-Length": "5"}, {"ETag": f'"p{n}"'}, body_out=5)
    _exchange(log, "POST", "/bkt/m?uploadId=U", "h", 200, AUTH,
              {"x-amz-version-id": "vm"})
    (rec,), _ = log.objects()
    assert (rec["url"], rec["role"], rec["size"], rec["version"]) == ("s3://bkt/m", "output",
                                                                      10, "s3:vm")


def test_requests_pair_with_responses_in_order_and_body_bytes_follow_their_head():
    log = R.RemoteLog()
    r1, r2 = _req("GET", "/x", "h"), _req("GET", "/y", "h")
    log.request(1, "p", 9, r1, len(r1), 0, 0, 0)
    log.request(1, "p", 9, r2, len(r2), 0, 0, 0)  # pipelined
    log.response(1, 9, _resp(100), 20, 0, 0)  # 100 Continue is not the answer
    h1 = _resp(200, ETag='"1"', Content_Length="30")
    log.response(1, 9, h1, len(h1) + 10, 0, 0)  # 10 body bytes in the head's read
    h2 = _resp(200, ETag='"2"', Content_Length="5")
    log.response(1, 9, h2, len(h2), 20, 0)  # 20 more body bytes of /x counted before it
    log.freed(1, 9, 5, 0)  # /y's body
    recs, _ = log.objects()
    by = {r["url"]: r for r in recs}
    assert by["https://h/x"]["bytes_read"] == 30 and by["https://h/x"]["version"] == "etag:1"
    assert by["https://h/y"]["bytes_read"] == 5 and by["https://h/y"]["version"] == "etag:2"


def test_non_http_and_telemetry_are_not_objects(monkeypatch):
    log = R.RemoteLog()
    log.request(1, "p", 1, b"\x16\x03binary", 7, 0, 0, 0)
    assert log.unparsed == 1 and log.exchanges == []
    _exchange(log, "POST", "/graphql", "api.wandb.ai", 200, {}, {})
    _exchange(log, "POST", "/ingest", "metrics.corp", 200, {}, {}, ssl=2)
    monkeypatch.setenv("ROAR_NONDATA_HOSTS", "metrics.corp")
    recs, telemetry = log.objects(R.nondata_hosts())
    assert recs == [] and {t["host"] for t in telemetry} == {"api.wandb.ai", "metrics.corp"}


def test_hashes_only_from_one_unambiguous_local_file():
    rec = {"role": "input", "method": "GET", "size": 4, "hash": None, "processes": ["p"],
           "kind": "remote"}
    files = [{"role": "output", "kind": "data", "hash": "aa", "size": 4, "processes": ["p"],
              "path": "/w/x"},
             {"role": "output", "kind": "data", "hash": "bb", "size": 5, "processes": ["p"],
              "path": "/w/y"},
             {"role": "output", "kind": "data", "hash": "cc", "size": 4, "processes": ["q"],
              "path": "/w/z"}]
    R.attach_hashes([rec], files)
    assert (rec["hash"], rec["hash_source"], rec["hash_file"]) == ("aa", "downloaded-file",
                                                                   "/w/x")
    twin = {"role": "input", "method": "GET", "size": 4, "hash": None, "processes": ["p", "q"],
            "kind": "remote"}
    R.attach_hashes([twin], files)  # two candidate files: unknown, never a guess
    assert twin["hash"] is None and twin.get("hash_source") is None
    up = {"role": "output", "method": "PUT", "size": 5, "hash": None, "processes": ["p"],
          "kind": "remote"}
    R.attach_hashes([up], [{**files[1], "role": "input"}])
    assert (up["hash"], up["hash_source"]) == ("bb", "uploaded-file")


def test_uninspected_peers(monkeypatch):
    log = R.RemoteLog()
    _exchange(log, "GET", "/x", "h:8443", 200, {}, {"ETag": '"1"'}, pid="p")
    connects = [{"family": "inet", "address": "127.0.0.1", "port": 8443, "process": "p"},
                {"family": "inet", "address": "10.0.0.1", "port": 443, "process": "q"},
                {"family": "inet6", "address": "::1", "port": 53, "process": "q"},
                {"family": "unix", "address": "/run/x", "port": None, "process": "q"},
                {"family": "inet", "address": "10.0.0.2", "port": 0, "process": "q"},
                {"family": "inet", "address": "10.9.0.1", "port": 9000, "process": "q"}]
    blind = R.uninspected(connects, log.exchanges)
    assert [(e["address"], e["port"]) for e in blind] == [("10.0.0.1", 443), ("10.9.0.1", 9000)]
    monkeypatch.setenv("ROAR_NONDATA_ENDPOINTS", "10.9.0.0/16:9000, :443")
    assert R.uninspected(connects, log.exchanges) == []


def test_an_interim_response_read_together_with_the_final_one_is_not_lost():
    """On a plain socket one recv can hold `100 Continue` and the final
    response: the final one still answers its request (an upload is not lost)."""
    log = R.RemoteLog()
    key = (1 << 63) | 5  # a plain socket, fd 5 (bpf/http.h)
    for name, etag in (("a", '"A"'), ("b", '"B"')):
        raw = _req("PUT", f"/bkt/{name}", "h", Expect="100-continue", Content_Length="4",
                   **AUTH)
        log.request(1, "p", key, raw, len(raw), 0, 0, 0, "http")
        both = _resp(100) + _resp(200, ETag=etag, x_amz_version_id=f"v{name}")
        log.response(1, key, both, len(both), 0, 4)
    recs, _ = log.objects()
    assert {(r["url"], r["role"], r["version"]) for r in recs} == {
        ("s3://bkt/a", "output", "s3:va"), ("s3://bkt/b", "output", "s3:vb")}
    assert log.unparsed == 0
