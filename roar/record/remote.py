"""Remote objects a run read or wrote over HTTP(S): the heads of HTTP/1.x
messages its processes sent and received (bpf/tls.h sees them in OpenSSL's
plaintext), paired into exchanges and named by a stable identity `url@version`.

A GET or HEAD that succeeded is a remote input; a PUT or POST is a remote
output (an S3 multipart upload is one output, assembled from its parts).
Identities follow the object store's own naming where it can be told from the
request: `s3://bucket/key` (virtual-host or path style, any endpoint that
speaks the S3 API), `gs://bucket/key`, else the https URL without its
credentials. Versions come from the response: S3 version id, GCS generation,
Azure version id, a Hugging Face commit, else the ETag, else Last-Modified
and size.

Bodies are never kept. Headers and query parameters that carry credentials
(Authorization, cookies, security tokens, request signatures) never leave
this module.
"""

from __future__ import annotations

import os
import re

import xxhash

# Patterns are compiled where first used (re caches them), ipaddress and
# urllib.parse imported there (~4 ms): every `roar run` imports this module
# (for RemoteLog), few see HTTP traffic or connect anywhere.
# query parameters that sign or authorise a request: dropped from identities
SECRET_PARAM = (
    r"(?i)^(x-amz-(signature|credential|security-token|date|expires|signedheaders|algorithm)"
    r"|x-goog-(signature|credential|date|expires|signedheaders|algorithm)"
    r"|awsaccesskeyid|signature|expires|sig|se|sp|sv|sr|st|skoid|sktid|skt|ske|sks|skv"
    r"|token|access_token|api_key|apikey|key|password|secret|auth|x-ms-.*)$")
REMOTE = "remote"  # the kind of a remote object's file record
# hosts whose traffic is telemetry or experiment tracking, not data (a pattern
# may carry a path prefix); more from ROAR_NONDATA_HOSTS (comma separated)
DEFAULT_NONDATA_HOSTS = ("api.wandb.ai", "*.wandb.ai", "*.sentry.io", "sentry.io",
                         "huggingface.co/api/telemetry")
# network peers whose unread traffic is not data: DNS by default; more from
# ROAR_NONDATA_ENDPOINTS, comma separated `CIDR:port`, `CIDR` or `:port`
DEFAULT_NONDATA_ENDPOINTS = (":53",)


def nondata_hosts() -> tuple[str, ...]:
    extra = os.environ.get("ROAR_NONDATA_HOSTS", "")
    return DEFAULT_NONDATA_HOSTS + tuple(h.strip() for h in extra.split(",") if h.strip())


def nondata_endpoints() -> list[tuple[object, int | None]]:
    """(network or None, port or None) pairs; a bad entry is ignored."""
    import ipaddress

    out = []
    extra = os.environ.get("ROAR_NONDATA_ENDPOINTS", "")
    for entry in DEFAULT_NONDATA_ENDPOINTS + tuple(extra.split(",")):
        entry = entry.strip()
        if not entry:
            continue
        net, port = entry, None
        m = re.match(r"^(.*):(\d+)$", entry)
        if m and (m.group(1) == "" or "/" in m.group(1) or "." in m.group(1)
                  or m.group(1).startswith("[")):
            net, port = m.group(1).strip("[]"), int(m.group(2))
        try:
            out.append((ipaddress.ip_network(net, strict=False) if net else None, port))
        except ValueError:
            continue
    return out
S3_VHOST = r"^(?P<bucket>[a-z0-9][a-z0-9.\-]*)\.s3[.\-]([a-z0-9\-]+\.)?amazonaws\.com$"
S3_PATHHOST = r"^s3[.\-]([a-z0-9\-]+\.)?amazonaws\.com$"
HF_RESOLVE = r"^/(?P<repo>.+?)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$"


class Message:
    """One parsed HTTP/1.x head. (Plain classes here and below: this module is
    imported by every `roar run`, and dataclasses cost it ~13 ms to import.)"""

    __slots__ = ("start", "headers", "head_len", "truncated")

    def __init__(self, start: str, headers: dict[str, str], head_len: int,
                 truncated: bool = False):
        self.start = start  # request or status line
        self.headers = headers  # lower-case names; the last value of a repeated name
        self.head_len = head_len  # bytes of the head, or -1 when the head was cut off
        self.truncated = truncated


def parse_head(raw: bytes) -> Message | None:
    """The start line and headers of a message head (None: not HTTP/1.x)."""
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[:end]
    lines = head.decode("latin-1").split("\r\n")
    if not lines or not lines[0]:
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Message(lines[0], headers, end + 4 if end >= 0 else -1, truncated=end < 0)


def _host_matches(host: str, path: str, patterns) -> bool:
    for pat in patterns:
        phost, _, ppath = pat.partition("/")
        if phost.startswith("*."):
            ok = host.endswith(phost[1:]) or host == phost[2:]
        else:
            ok = host == phost
        if ok and (not ppath or path.lstrip("/").startswith(ppath)):
            return True
    return False


def _clean_query(query: str) -> tuple[str, dict[str, str]]:
    """The query without credentials, and its parameters."""
    from urllib.parse import parse_qsl, quote, urlencode

    params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True)
              if not re.match(SECRET_PARAM, k)]
    return urlencode(params, quote_via=quote, safe="/"), dict(params)


def _s3_api(headers: dict[str, str]) -> bool:
    auth = headers.get("authorization", "")
    return (auth.startswith("AWS4-HMAC-SHA256") or auth.startswith("AWS ")
            or any(h.startswith("x-amz-") for h in headers))


def identity(scheme: str, host: str, target: str, headers: dict[str, str]) -> dict:
    """{url, endpoint, object, params}: the object a request names. `url` is
    the stable name (s3://, gs://, or the URL without credentials)."""
    from urllib.parse import unquote

    path, _, query = target.partition("?")
    query, params = _clean_query(query)
    hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    endpoint = f"{scheme}://{host}"
    m = re.match(S3_VHOST, hostname)
    if m:
        bucket, key = m.group("bucket"), unquote(path.lstrip("/"))
        return {"url": f"s3://{bucket}/{key}", "endpoint": endpoint, "store": "s3",
                "params": params}
    if re.match(S3_PATHHOST, hostname) or (_s3_api(headers) and path.count("/") >= 1):
        bucket, _, key = unquote(path.lstrip("/")).partition("/")
        if bucket:
            return {"url": f"s3://{bucket}/{key}" if key else f"s3://{bucket}/",
                    "endpoint": endpoint, "store": "s3", "params": params}
    m = re.match(r"^/(?:download/|upload/)?storage/v1/b/(?P<b>[^/]+)/o/(?P<o>[^/]+)$", path)
    if m and hostname.endswith("googleapis.com"):  # the JSON API
        return {"url": f"gs://{m.group('b')}/{unquote(m.group('o'))}", "endpoint": endpoint,
                "store": "gcs", "params": params}
    if hostname == "storage.googleapis.com":  # the XML API
        bucket, _, key = unquote(path.lstrip("/")).partition("/")
        return {"url": f"gs://{bucket}/{key}", "endpoint": endpoint, "store": "gcs",
                "params": params}
    store = "azure" if hostname.endswith(".blob.core.windows.net") else (
        "huggingface" if re.match(HF_RESOLVE, path) else "http")
    url = f"{scheme}://{host}{path}" + (f"?{query}" if query else "")
    return {"url": url, "endpoint": endpoint, "store": store, "params": params}


# response headers naming a version, most specific first: (header, label)
VERSION_HEADERS = (("x-amz-version-id", "s3"), ("x-goog-generation", "gcs"),
                   ("x-ms-version-id", "azure"), ("x-repo-commit", "commit"))


def version_of(headers: dict[str, str], size: int | None) -> str | None:
    """The version a response names: `label:value`, most specific first."""
    for name, label in VERSION_HEADERS:
        v = headers.get(name)
        if v and v != "null":
            return f"{label}:{v}"
    etag = headers.get("x-linked-etag") or headers.get("etag")
    if etag:
        return "etag:" + etag.removeprefix("W/").strip('"')
    if headers.get("last-modified"):
        return f"modified:{headers['last-modified']}" + (f";size={size}" if size is not None
                                                           else "")
    return None


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


class Exchange:
    """A request and (once seen) its response."""

    def __init__(self, pid_key: str, method: str, target: str, host: str, scheme: str,
                 req_headers: dict[str, str], body_out: int = 0, ts: int = 0,
                 status: int | None = None, resp_headers: dict[str, str] | None = None,
                 body_in: int = 0):
        self.pid_key = pid_key
        self.method = method
        self.target = target
        self.host = host
        self.scheme = scheme
        self.req_headers = req_headers
        self.body_out = body_out  # request body bytes written
        self.ts = ts
        self.status = status
        self.resp_headers = {} if resp_headers is None else resp_headers
        self.body_in = body_in  # response body bytes read

    def __repr__(self) -> str:
        return f"Exchange({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

    def __eq__(self, other) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return vars(self) == vars(other)


class RemoteLog:
    """Per run: pairs request and response heads on each TLS session
    (process, SSL*) in order, and turns exchanges into remote objects."""

    def __init__(self):
        self.exchanges: list[Exchange] = []
        self._open: dict[tuple[int, int], list[Exchange]] = {}  # (tgid, ssl) -> in flight
        self._last: dict[tuple[int, int], Exchange] = {}  # last message's exchange
        self.unparsed = 0  # heads that were not HTTP/1.x

    def _credit(self, key, body_in: int, body_out: int) -> None:
        """Body bytes counted since the last head belong to the exchange of
        that head (a request body follows its request, a response body its
        response)."""
        ex = self._last.get(key)
        if ex is not None:
            ex.body_in += body_in
            ex.body_out += body_out

    def request(self, tgid: int, pid_key: str, ssl: int, raw: bytes, call_bytes: int,
                body_in: int, body_out: int, ts: int, scheme: str = "https") -> None:
        key = (tgid, ssl)
        self._credit(key, body_in, body_out)
        msg = parse_head(raw)
        parts = msg.start.split(" ") if msg else []
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self.unparsed += 1
            return
        ex = Exchange(pid_key, parts[0], parts[1], msg.headers.get("host", ""), scheme,
                      msg.headers, ts=ts)
        if msg.head_len >= 0:
            ex.body_out += max(0, call_bytes - msg.head_len)
        self.exchanges.append(ex)
        self._open.setdefault(key, []).append(ex)
        self._last[key] = ex

    def response(self, tgid: int, ssl: int, raw: bytes, call_bytes: int, body_in: int,
                 body_out: int) -> None:
        key = (tgid, ssl)
        self._credit(key, body_in, body_out)
        msg = parse_head(raw)
        parts = msg.start.split(" ", 2) if msg else []
        queue = self._open.get(key)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not queue:
            self.unparsed += 1
            return
        status = _int(parts[1])
        if status is not None and 100 <= status < 200 and status != 101:
            # an interim response (100 Continue): the real one follows, maybe in the
            # same read (plain sockets hand both over at once)
            rest = raw[msg.head_len:] if msg.head_len >= 0 else b""
            if rest.startswith(b"HTTP/1."):
                self.response(tgid, ssl, rest, call_bytes - msg.head_len, 0, 0)
            return
        ex = queue.pop(0)
        ex.status = status
        ex.resp_headers = msg.headers
        if msg.head_len >= 0:
            ex.body_in += max(0, call_bytes - msg.head_len)
        self._last[key] = ex

    def freed(self, tgid: int, ssl: int, body_in: int, body_out: int) -> None:
        key = (tgid, ssl)
        self._credit(key, body_in, body_out)
        self._open.pop(key, None)
        self._last.pop(key, None)

    # -- objects ----------------------------------------------------------------

    def objects(self, nondata_hosts=DEFAULT_NONDATA_HOSTS) -> tuple[list[dict], list[dict]]:
        """(remote file records, telemetry exchanges). A record is
        {role, kind: "remote", path: url, url, method, version, size, hash,
        hash_source, status, endpoint, store, ranges, processes, bytes_read,
        bytes_written}; repeated or ranged requests of one version are one
        record."""
        by_key: dict[tuple, dict] = {}
        uploads: dict[str, dict] = {}  # S3 multipart upload id -> its record
        telemetry = []
        for ex in self.exchanges:
            if ex.status is None or not (200 <= ex.status < 300 or ex.status == 304):
                continue
            ident = identity(ex.scheme, ex.host, ex.target, ex.req_headers)
            path = ex.target.partition("?")[0]
            if _host_matches(ex.host.rsplit(":", 1)[0], path, nondata_hosts):
                telemetry.append({"host": ex.host, "method": ex.method, "status": ex.status})
                continue
            params = ident["params"]
            method = ex.method
            if method in ("GET", "HEAD"):
                role = "input"
            elif method in ("PUT", "POST"):
                role = "output"
            else:
                continue
            if ident["store"] == "s3" and "uploads" in params and method == "POST":
                continue  # starts a multipart upload; the completion names the object
            if ident["store"] == "s3" and "uploadId" in params:
                rec = uploads.setdefault(params["uploadId"], _record(
                    "output", ident, "PUT", ex.pid_key))
                if "partNumber" in params:
                    rec["size"] = (rec["size"] or 0) + (_body_size(ex.req_headers)
                                                        or ex.body_out)
                    rec["bytes_written"] += ex.body_out
                else:  # completion
                    rec["version"] = version_of(ex.resp_headers, rec["size"])
                    rec["status"] = "multipart"
                    by_key[("output", rec["url"], rec["version"], params["uploadId"])] = rec
                continue
            size = _size(ex, role)
            version = version_of(ex.resp_headers, size)
            if version is None and "versionId" in params:
                version = f"s3:{params['versionId']}"
            key = (role, ident["url"], version)
            rec = by_key.get(key)
            if rec is None:
                rec = by_key[key] = _record(role, ident, method, ex.pid_key)
                rec["version"] = version
            if ex.pid_key not in rec["processes"]:
                rec["processes"].append(ex.pid_key)
            if role == "input":
                rng = ex.req_headers.get("range")
                if rng:
                    rec["ranges"].append(rng)
                if size is not None and (rec["size"] is None or method == "GET"):
                    rec["size"] = size
                rec["bytes_read"] += ex.body_in
                if method == "GET" and rec["method"] == "HEAD":
                    rec["method"] = "GET"
            else:
                rec["size"] = size
                rec["bytes_written"] += ex.body_out
        records = list(by_key.values())
        for rec in records:
            rec["ident"] = ident_key(rec["url"], rec["version"])
            rec["url_key"] = url_key(rec["url"])
        return records, telemetry


def _body_size(headers: dict[str, str]) -> int | None:
    """The size of a request's object body: S3's aws-chunked uploads (with
    trailing checksums) say it apart from the encoded length."""
    return _int(headers.get("x-amz-decoded-content-length")) or (
        None if "aws-chunked" in headers.get("content-encoding", "")
        else _int(headers.get("content-length")))


def _size(ex: Exchange, role: str) -> int | None:
    if role == "output":
        return _body_size(ex.req_headers)
    cr = ex.resp_headers.get("content-range", "")
    if "/" in cr and cr.rpartition("/")[2].isdigit():
        return int(cr.rpartition("/")[2])
    if ex.status == 200:
        return _int(ex.resp_headers.get("content-length"))
    return None


def ident_key(url: str, version: str | None) -> str | None:
    """The index key of one version of a remote object (hex, like a content
    hash; the prefix keeps it apart from any content): runs that wrote and
    read the same url@version are linked by it even when its content hash is
    unknown."""
    if version is None:
        return None
    return xxhash.xxh3_128(f"remote:{url}@{version}".encode("utf-8", "surrogateescape")
                           ).hexdigest()


def url_key(url: str) -> str:
    """The index key of a remote object, any version (hex)."""
    return xxhash.xxh3_128(f"url:{url}".encode("utf-8", "surrogateescape")).hexdigest()


URL_REF = r"(?i)^[a-z][a-z0-9+.\-]*://"


def is_url(ref: str) -> bool:
    return bool(re.match(URL_REF, ref))


def normalize_ref(ref: str) -> str:
    """A URL as the user gave it, as roar names objects: credentials dropped;
    S3/GCS https URLs as s3:// and gs:// names."""
    scheme, _, rest = ref.partition("://")
    scheme = scheme.lower()
    if scheme in ("s3", "gs"):
        return f"{scheme}://{rest}"
    host, slash, target = rest.partition("/")
    host = host.rpartition("@")[2]  # user:password@ never names the object
    return identity(scheme, host, slash + target, {})["url"]


def _record(role: str, ident: dict, method: str, pid_key: str) -> dict:
    return {"role": role, "kind": "remote", "path": ident["url"], "url": ident["url"],
            "endpoint": ident["endpoint"], "store": ident["store"], "method": method,
            "version": None, "size": None, "hash": None, "hash_source": None,
            "status": "ok", "ranges": [], "processes": [pid_key], "bytes_read": 0,
            "bytes_written": 0}


def attach_hashes(remote: list[dict], files: list[dict]) -> None:
    """Give a remote object the content hash of the local file that carried
    it, where the record shows one unambiguously: a download written by the
    same process to exactly one output of the object's size, or an upload of
    exactly one input of the body's size read by the same process. Anything
    less certain leaves the hash unknown (null)."""
    for rec in remote:
        if rec["size"] is None or rec["hash"] is not None:
            continue
        if rec["role"] == "input" and rec["method"] == "HEAD":
            continue
        want_role = "output" if rec["role"] == "input" else "input"
        procs = set(rec["processes"])
        cands = [f for f in files
                 if f.get("role") == want_role and f.get("kind") != "remote"
                 and f.get("hash") and f.get("size") == rec["size"]
                 and procs & set(f.get("processes") or ())]
        if len(cands) == 1:
            rec["hash"] = cands[0]["hash"]
            rec["hash_source"] = ("downloaded-file" if rec["role"] == "input"
                                  else "uploaded-file")
            rec["hash_file"] = cands[0]["path"]


def _ip_address(text: str):
    import ipaddress

    return ipaddress.ip_address(text)


def uninspected(connects: list[dict], exchanges: list[Exchange],
                nondata: list | None = None) -> list[dict]:
    """Network endpoints a run's processes connected to whose traffic roar
    could not read: peers of processes that made no HTTP exchange roar parsed
    on that port (TLS in a static binary, a private unprobed OpenSSL, HTTP/2,
    gRPC, any other protocol). Their bytes may be inputs. Peers on the
    non-data list (DNS, ROAR_NONDATA_ENDPOINTS) are left out."""
    if not connects:  # most runs: the non-data list is not even read
        return []
    nondata = nondata_endpoints() if nondata is None else nondata
    seen_ports: dict[str, set[int]] = {}
    for ex in exchanges:
        m = re.search(r":(\d+)$", ex.host)
        port = int(m.group(1)) if m else (443 if ex.scheme == "https" else 80)
        seen_ports.setdefault(ex.pid_key, set()).add(port)
    out = []
    for c in connects:
        port = c.get("port")
        if c.get("family") not in ("inet", "inet6") or not port:
            continue  # unix sockets; port 0 is a UDP socket finding its route
        if port in seen_ports.get(c.get("process"), ()):
            continue
        addr = _ip_address(c["address"])
        if any((net is None or addr in net) and (p is None or p == port) for net, p in nondata):
            continue
        entry = {"address": c["address"], "port": port, "process": c.get("process")}
        if entry not in out:
            out.append(entry)
    return out
