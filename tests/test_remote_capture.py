"""Remote data by content, captured for real: an S3-compatible server (moto)
and a plain HTTPS server on loopback with a self-signed certificate, boto3,
urllib and curl under `roar run`, seen through the OpenSSL uprobes.

The pipeline: one run uploads a dataset, a second streams it and writes a
model, a third uploads the model. Lineage by S3 key and by local file must
agree, the versions must be recorded, and no credential may reach the store.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, xxh128

pytestmark = pytest.mark.capture

SECRET = "roarTESTsecretKEY0123456789abcdefXYZ"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "AKIAROARTEST", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

CLIENT = '''
import os, sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["S3_URL"], verify=os.environ.get("CA") or None,
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
op, *args = sys.argv[1:]
if op == "upload":        # upload FILE... under data/
    for f in args:
        s3.upload_file(f, "bkt", "data/" + os.path.basename(f))
elif op == "train":       # stream data/* and write a model built from them
    out = bytearray()
    for key in args:
        body = s3.get_object(Bucket="bkt", Key="data/" + key)["Body"]
        for chunk in body.iter_chunks(65536):
            out += chunk[:16]
    s3.download_file("bkt", "data/" + args[0], "local-copy.bin")
    with open("model.bin", "wb") as f:
        f.write(bytes(out) * 100)
elif op == "publish":     # upload the model
    s3.upload_file(args[0], "bkt", "models/model.bin")
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc=None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", d / "key.pem", "-out", d / "cert.pem", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    for f in d.iterdir():
        f.chmod(0o644)
    return d / "cert.pem", d / "key.pem"


@pytest.fixture(scope="module")
def s3(cert, tmp_path_factory):
    """A moto S3 server over HTTPS with a versioned bucket `bkt`."""
    pytest.importorskip("moto", reason="moto is in the test extra (scripts/setup.sh)")
    import boto3

    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port), "-c", str(cert[0]), "-k", str(cert[1])],
                            stdout=log, stderr=log, start_new_session=True)
    try:
        _wait_port(port, proc)
        url = f"https://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=url, verify=str(cert[0]),
                              aws_access_key_id="x", aws_secret_access_key="y",
                              region_name="us-east-1")
        client.create_bucket(Bucket="bkt")
        client.put_bucket_versioning(Bucket="bkt", VersioningConfiguration={"Status": "Enabled"})
        yield url, client
    finally:
        proc.terminate()
        proc.wait(10)


def _env(roar, s3url, cert, **extra):
    return roar.env(S3_URL=s3url, CA=str(cert), **AWS_ENV, **extra)


def _client_run(roar, env, *args):
    """`roar run -- python client.py ARGS`: its run id and `roar show` document."""
    p = roar("run", "--", sys.executable, "client.py", *args, env=env, check=False)
    assert p.returncode == 0, p.stderr
    rid = roar.json("log", "-n", "1")[0]["id"]
    return rid, roar.json("show", rid)


def _remote(doc, role):
    return [f for f in doc[role] if f["kind"] == "remote"]


def test_s3_pipeline_by_key_version_and_content(roar, s3, cert):
    s3url, client = s3
    work = roar.cwd
    (work / "client.py").write_text(CLIENT)
    data = {"a.bin": os.urandom(70_000), "b.bin": os.urandom(30_000),
            "big.bin": os.urandom(9 << 20)}  # big: a multipart upload
    for name, body in data.items():
        (work / name).write_bytes(body)
    env = _env(roar, s3url, cert[0])

    def run(*args):
        return _client_run(roar, env, *args)

    up_id, up = run("upload", "a.bin", "b.bin")
    _, up_big = run("upload", "big.bin")  # not upstream of the model
    outs = {f["url"]: f for f in _remote(up, "outputs") + _remote(up_big, "outputs")}
    assert set(outs) == {f"s3://bkt/data/{n}" for n in data}, up["outputs"]
    assert outs["s3://bkt/data/big.bin"]["status"] == "multipart"
    for name, body in data.items():
        rec = outs[f"s3://bkt/data/{name}"]
        vid = client.head_object(Bucket="bkt", Key=f"data/{name}")["VersionId"]
        assert rec["version"] == f"s3:{vid}" and rec["size"] == len(body)
        # the body was one local file the same process read: its hash, and said so
        assert (rec["hash"], rec["hash_source"]) == (xxh128(work / name), "uploaded-file")
    assert up["complete"], up["incomplete_reasons"]

    train_id, train = run("train", "a.bin", "b.bin")
    ins = {f["url"]: f for f in _remote(train, "inputs")}
    assert set(ins) == {"s3://bkt/data/a.bin", "s3://bkt/data/b.bin"}, train["inputs"]
    assert ins["s3://bkt/data/a.bin"]["version"] == outs["s3://bkt/data/a.bin"]["version"]
    assert ins["s3://bkt/data/a.bin"]["hash"] == xxh128(work / "a.bin")  # download_file
    assert train["complete"], train["incomplete_reasons"]
    pub_id, pub = run("publish", "model.bin")
    (model,) = _remote(pub, "outputs")
    assert model["url"] == "s3://bkt/models/model.bin" and model["hash"] == xxh128(
        work / "model.bin")

    # lineage from the uploaded model's S3 key reaches the dataset objects
    doc = roar.json("inputs", "s3://bkt/models/model.bin")
    urls = {e.get("url") or e["path"] for e in doc["inputs"]}
    assert {"s3://bkt/data/a.bin", "s3://bkt/data/b.bin"} <= urls, doc["inputs"]
    assert "s3://bkt/data/big.bin" not in urls
    # membership by S3 key and by the local file agree
    for ref in ("s3://bkt/data/b.bin", str(work / "b.bin")):
        m = roar.json("inputs", "s3://bkt/models/model.bin", "--contains", ref)
        assert m["answer"] == "yes", (ref, m)
    for ref in ("s3://bkt/data/big.bin", str(work / "big.bin")):
        m = roar.json("inputs", "s3://bkt/models/model.bin", "--contains", ref)
        assert m["answer"] == "no", (ref, m["reasons"])
    # which runs read and wrote which versions of a key
    view = roar.json("show", "s3://bkt/data/a.bin")
    (v,) = view["versions"]
    assert v["written_by"] == [up_id] and v["read_by"] == [train_id]
    down = roar.json("outputs", "s3://bkt/data/a.bin")
    assert "s3://bkt/models/model.bin" in {e.get("url") or e["path"] for e in down["outputs"]}

    # every document meets its published schema
    jsonschema = pytest.importorskip("jsonschema")
    for name, shown in (("show-run", train), ("show-run", pub), ("show-remote", view),
                        ("inputs", doc), ("outputs", down)):
        schema = json.loads((REPO / "docs" / "schemas" / f"{name}.schema.json").read_text())
        jsonschema.Draft202012Validator(schema).validate(shown)

    # no credential, signature or secret in the store
    raw = b"".join(p.read_bytes() for p in (roar.home / "store").glob("*.mdb"))
    for needle in (SECRET.encode(), b"AKIAROARTEST", b"Signature=", b"AWS4-HMAC-SHA256"):
        assert needle not in raw, needle


def test_new_version_of_a_key_shows_in_show_and_diff(roar, s3, cert):
    s3url, client = s3
    work = roar.cwd
    (work / "client.py").write_text(CLIENT)
    env = _env(roar, s3url, cert[0])
    ids = []
    for content in (b"first version\n" * 100, b"second version!\n" * 100):
        client.put_object(Bucket="bkt", Key="data/v.bin", Body=content)
        p = roar("run", "--", sys.executable, "client.py", "train", "v.bin", env=env,
                 check=False)
        assert p.returncode == 0, p.stderr
        ids.append(roar.json("log", "-n", "1")[0]["id"])
    view = roar.json("show", "s3://bkt/data/v.bin")
    assert len(view["versions"]) == 2
    assert [v["read_by"] for v in view["versions"]] == [[ids[0]], [ids[1]]]
    diff = roar.json("diff", ids[0], ids[1])
    changed = [c for c in diff["changes"] if c["kind"] == "data"]
    assert any("s3://bkt/data/v.bin" in str(c) for c in changed), diff["changes"]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b"plain https object\n" * 50

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("ETag", '"obj-1"')
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *a):
        pass


@pytest.fixture(scope="module")
def https(cert):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_curl_and_urllib_gets_are_remote_inputs(roar, https, cert):
    # the signed URL comes from a file (as from a config): the store must not keep its token
    (roar.cwd / "url.txt").write_text(f"{https}/py?token=SECRETTOKEN&x=1")
    code = ("import ssl, sys, urllib.request; c = ssl.create_default_context(cafile=sys.argv[1]);"
            "urllib.request.urlopen(open('url.txt').read(), context=c).read()")
    script = (f"curl -sf --cacert {cert[0]} {https}/curl -o /dev/null && "
              f"{sys.executable} -c \"{code}\" {cert[0]}")
    p, doc = roar.run("sh", "-c", script)
    ins = {f["url"]: f for f in _remote(doc, "inputs")}
    assert set(ins) == {f"{https}/curl", f"{https}/py?x=1"}, doc["inputs"]
    assert all(f["version"] == "etag:obj-1" for f in ins.values())
    assert ins[f"{https}/curl"]["size"] == len(_Handler.body)
    assert doc["complete"], doc["incomplete_reasons"]
    raw = b"".join(p.read_bytes() for p in (roar.home / "store").glob("*.mdb"))
    assert b"SECRETTOKEN" not in raw


def test_tls_roar_cannot_read_makes_membership_unknown(roar, https, cert, tmp_path):
    """curl with a private copy of OpenSSL (not the one probed): its traffic is
    uninspected; the run says so and membership answers unknown, not no."""
    private = tmp_path / "private-ssl"
    private.mkdir()
    lib = subprocess.run(["sh", "-c", "ldd $(command -v curl) | awk '/libssl/ {print $3}'"],
                         capture_output=True, text=True).stdout.strip()
    assert lib, "curl links no libssl"
    shutil.copy(lib, private / Path(lib).name)
    p, doc = roar.run("env", f"LD_LIBRARY_PATH={private}", "curl", "-sf", "--cacert",
                      str(cert[0]), f"{https}/blind", "-o", "blind.out")
    port = int(https.rpartition(":")[2])
    assert _remote(doc, "inputs") == []
    assert {(e["address"], e["port"]) for e in doc["remote"]["uninspected"]} == {
        ("127.0.0.1", port)}
    assert not doc["complete"]
    assert any("uninspected network I/O" in r for r in doc["incomplete_reasons"])
    (roar.cwd / "other.bin").write_bytes(b"never read by anyone")
    m = roar.json("inputs", doc["id"], "--contains", str(roar.cwd / "other.bin"))
    assert m["answer"] == "unknown"


# -- plain HTTP (bpf/http.h): sendto/recvfrom on sockets connected to an IP address ---------

@pytest.fixture(scope="module")
def s3_http(tmp_path_factory):
    """A moto S3 server over plain HTTP (as an in-cluster MinIO often is)."""
    pytest.importorskip("moto", reason="moto is in the test extra (scripts/setup.sh)")
    import boto3

    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto-http") / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=log, stderr=log, start_new_session=True)
    try:
        _wait_port(port, proc)
        url = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=url, aws_access_key_id="x",
                              aws_secret_access_key="y", region_name="us-east-1")
        client.create_bucket(Bucket="bkt")
        client.put_bucket_versioning(Bucket="bkt", VersioningConfiguration={"Status": "Enabled"})
        yield url, client
    finally:
        proc.terminate()
        proc.wait(10)


def test_s3_over_plain_http_by_key_version_and_content(roar, s3_http):
    s3url, client = s3_http
    work = roar.cwd
    (work / "client.py").write_text(CLIENT)
    data = {"a.bin": os.urandom(50_000), "b.bin": os.urandom(20_000)}
    for name, body in data.items():
        (work / name).write_bytes(body)
    env = roar.env(S3_URL=s3url, **AWS_ENV)

    def run(*args):
        return _client_run(roar, env, *args)

    _, up = run("upload", "a.bin", "b.bin")
    outs = {f["url"]: f for f in _remote(up, "outputs")}
    assert set(outs) == {"s3://bkt/data/a.bin", "s3://bkt/data/b.bin"}, up["outputs"]
    for name, body in data.items():
        rec = outs[f"s3://bkt/data/{name}"]
        vid = client.head_object(Bucket="bkt", Key=f"data/{name}")["VersionId"]
        assert rec["version"] == f"s3:{vid}" and rec["size"] == len(body)
        assert rec["hash"] == xxh128(work / name)
    assert up["complete"], up["incomplete_reasons"]
    assert up["remote"]["uninspected"] == []

    _, train = run("train", "a.bin", "b.bin")
    ins = {f["url"]: f for f in _remote(train, "inputs")}
    assert set(ins) == {"s3://bkt/data/a.bin", "s3://bkt/data/b.bin"}, train["inputs"]
    assert ins["s3://bkt/data/a.bin"]["version"] == outs["s3://bkt/data/a.bin"]["version"]
    assert ins["s3://bkt/data/a.bin"]["hash"] == xxh128(work / "a.bin")  # download_file
    # body bytes are counted, the last response's arriving with the socket's close
    from roar.record.store import Store

    with Store(roar.home, readonly=True) as st:
        stored = {f["url"]: f for f in st.run_files(train["id"]) if f["kind"] == "remote"
                  and f["role"] == "input"}
    assert {k: v["bytes_read"] for k, v in stored.items()} == {  # a.bin: get_object, download
        "s3://bkt/data/a.bin": 2 * len(data["a.bin"]), "s3://bkt/data/b.bin": len(data["b.bin"])}
    # the objects under one key prefix form a dataset, versioned by their object versions
    doc = roar.json("inputs", str(work / "model.bin"))
    (ds,) = [d for d in doc["datasets"] if d["path"] == "s3://bkt/data"]
    assert (ds["count"], ds["complete"]) == (2, True) and ds["version"], ds
    assert {m["path"]: m["version"] for m in ds["members"]} == {
        "a.bin": ins["s3://bkt/data/a.bin"]["version"],
        "b.bin": ins["s3://bkt/data/b.bin"]["version"]}
    # the reproduction plan lists the objects the step fetches again, with their versions
    p = roar("reproduce", str(work / "model.bin"), "--json", "--no-packages", check=False)
    plan = json.loads(p.stdout)
    (step,) = [s for s in plan["steps"] if s["run"] == train["id"]]
    fetched = {i["url"]: i["version"] for i in step["inputs"] if i["source"] == "remote"}
    assert fetched == {u: ins[u]["version"] for u in ins}, step["inputs"]
    assert any("fetches 2 remote object(s) again" in w for w in plan["warnings"]), plan
    assert train["complete"], train["incomplete_reasons"]
    raw = b"".join(p.read_bytes() for p in (roar.home / "store").glob("*.mdb"))
    for needle in (SECRET.encode(), b"AKIAROARTEST", b"Signature="):
        assert needle not in raw, needle


@pytest.fixture(scope="module")
def http_plain():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_curl_and_urllib_over_plain_http_are_remote_inputs(roar, http_plain):
    code = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1]).read()"
    script = (f"curl -sf {http_plain}/curl -o /dev/null && "
              f"{sys.executable} -c \"{code}\" {http_plain}/py")
    p, doc = roar.run("sh", "-c", script)
    ins = {f["url"]: f for f in _remote(doc, "inputs")}
    assert set(ins) == {f"{http_plain}/curl", f"{http_plain}/py"}, doc["inputs"]
    assert all(f["version"] == "etag:obj-1" for f in ins.values())
    assert all(f["size"] == len(_Handler.body) for f in ins.values())
    assert doc["complete"], doc["incomplete_reasons"]


def test_http_moved_with_write_and_read_is_uninspected(roar, http_plain):
    """A client that puts HTTP on its socket with write()/read() (not parsed:
    bpf/http.h reads sendto/recvfrom) leaves its peer uninspected: the run is
    incomplete and membership unknown, never a silent complete."""
    port = int(http_plain.rpartition(":")[2])
    code = ("import os, socket, sys\n"
            "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
            "os.write(s.fileno(), b'GET /raw HTTP/1.1\\r\\nHost: x\\r\\n'\n"
            "         b'Connection: close\\r\\n\\r\\n')\n"
            "d = b''\n"
            "while True:\n"
            "    c = os.read(s.fileno(), 65536)\n"
            "    if not c: break\n"
            "    d += c\n"
            "assert d.startswith(b'HTTP/1.')")
    p, doc = roar.run(sys.executable, "-c", code, str(port))
    assert _remote(doc, "inputs") == []
    assert {(e["address"], e["port"]) for e in doc["remote"]["uninspected"]} == {
        ("127.0.0.1", port)}
    assert not doc["complete"]
    (roar.cwd / "other.bin").write_bytes(b"never read by anyone")
    m = roar.json("inputs", doc["id"], "--contains", str(roar.cwd / "other.bin"))
    assert m["answer"] == "unknown"
