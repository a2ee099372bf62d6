"""A loopback stand-in for the Hugging Face Hub, for tests that drive the real ``huggingface_hub`` client.

It speaks the endpoints ``huggingface_hub`` 2.4 calls to create a repo, upload a folder and
download a snapshot, with the status codes, error headers (``X-Error-Code``) and file headers
(``ETag``, ``X-Repo-Commit``, ``Content-Length``) the client checks. Preupload answers "regular"
for every file, so uploads arrive base64-encoded in the commit instead of through LFS/Xet storage.
Repos live in memory; every commit gets a 40-hex id, so ``@REVISION`` downloads work.

Use :func:`point_client_at` to aim an already imported ``huggingface_hub`` at the server.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Repo:
    owner: str
    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}
    refs: dict[str, str] = field(default_factory=dict)                  # branch -> sha


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    """``with HubServer(tokens={"hf_x": "alice"}) as hub: hub.url`` — a Hub on 127.0.0.1, any free port.

    ``tokens`` maps tokens to user names; a user may write to its own namespace and to the
    organisations listed for it in ``orgs``. ``requests`` records (method, path) of every call.
    """

    def __init__(self, tokens: dict[str, str] | None = None, orgs: dict[str, list[str]] | None = None):
        self.tokens = tokens or {}
        self.orgs = orgs or {}
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port (idempotent); clients then get connection refused."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def can_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or namespace in self.orgs.get(user, []))

    def commit(self, repo: Repo, parent: str | None, files: dict[str, bytes], deleted: set[str], message: str) -> str:
        tree = dict(repo.commits[parent]) if parent else {}
        for path in deleted:
            tree = {p: v for p, v in tree.items() if p != path and not p.startswith(path.rstrip("/") + "/")}
        tree.update(files)
        sha = hashlib.sha1(f"{parent}\n{message}\n{time.time_ns()}".encode() + b"".join(
            p.encode() + git_blob_sha(v).encode() for p, v in sorted(tree.items()))).hexdigest()
        repo.commits[sha] = tree
        return sha


_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$"), "model_info"),
    ("GET", re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?$"), "tree"),
    ("POST", re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("HEAD", re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]


class _Reply(Exception):
    def __init__(self, status: int, body=None, headers: dict | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


def _error(status: int, message: str, code: str | None = None) -> _Reply:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return _Reply(status, {"error": message}, headers)


def _handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):
            self._dispatch("GET")

        def do_HEAD(self):
            self._dispatch("HEAD")

        def do_POST(self):
            self._dispatch("POST")

        # -- plumbing -------------------------------------------------------------------------
        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            hub.requests.append((method, url.path))
            length = int(self.headers.get("Content-Length") or 0)
            self.body = self.rfile.read(length) if length else b""
            self.query = parse_qs(url.query)
            try:
                reply = self._route(method, url.path)
            except _Reply as err:
                reply = err
            self._send(method, reply)

        def _route(self, method: str, path: str) -> _Reply:
            for m, pattern, name in _ROUTES:
                match = pattern.match(path)
                if m == method and match:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    with hub.lock:
                        return getattr(self, name)(**params)
            raise _error(404, f"no route for {method} {path}")

        def _send(self, method: str, reply: _Reply) -> None:
            body = reply.body
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                reply.headers.setdefault("Content-Type", "application/json")
            body = body or b""
            self.send_response(reply.status)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)

        def _user(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return None
            user = hub.tokens.get(auth[len("Bearer "):])
            if user is None:
                raise _error(401, "Invalid credentials in Authorization header")
            return user

        def _repo(self, repo_id: str, write: bool = False) -> Repo:
            user = self._user()
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not hub.can_write(user, repo_id.split("/")[0])):
                raise _error(401 if user is None else 404, "Repository not found", "RepoNotFound")
            if write and not hub.can_write(user, repo_id.split("/")[0]):
                raise _error(403 if user else 401, f"You don't have write access to {repo_id}")
            return repo

        def _sha(self, repo: Repo, rev: str) -> str:
            sha = repo.refs.get(rev) or (rev if rev in repo.commits else None)
            if sha is None:
                raise _error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return sha

        # -- endpoints ------------------------------------------------------------------------
        def whoami(self):
            user = self._user()
            if user is None:
                raise _error(401, "Invalid username or password.")
            return _Reply(200, {"type": "user", "name": user, "orgs": [{"name": o} for o in hub.orgs.get(user, [])]})

        def validate_yaml(self):
            """Model cards are checked before upload; like the Hub, refuse front matter that is no YAML mapping."""
            import yaml

            content = json.loads(self.body)["content"]
            match = re.match(r"^---\n(.*?)\n---", content, re.S)
            try:
                meta = yaml.safe_load(match.group(1)) if match else {}
            except yaml.YAMLError as err:
                return _Reply(400, f"Invalid YAML in the model card metadata: {err}".encode())
            if not isinstance(meta, (dict, type(None))):
                return _Reply(400, b"The model card metadata must be a YAML mapping")
            return _Reply(200, {"errors": [], "warnings": []})

        def create_repo(self):
            user = self._user()
            if user is None:
                raise _error(401, "You must be authenticated to create a repo")
            payload = json.loads(self.body or b"{}")
            namespace = payload.get("organization") or user
            repo_id = f"{namespace}/{payload['name']}"
            if not hub.can_write(user, namespace):
                raise _error(403, f"You don't have the rights to create a model under the namespace \"{namespace}\"")
            url = f"{hub.url}/{repo_id}"
            if repo_id in hub.repos:
                raise _Reply(409, {"error": "You already created this model repo", "url": url})
            repo = hub.repos[repo_id] = Repo(owner=user, private=payload.get("visibility") == "private")
            repo.refs["main"] = hub.commit(repo, None, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                                           set(), "initial commit")
            return _Reply(200, {"url": url, "name": repo_id, "id": repo_id})

        def model_info(self, repo: str, rev: str = "main"):
            r = self._repo(repo)
            sha = self._sha(r, rev)
            return _Reply(200, {"id": repo, "modelId": repo, "author": repo.split("/")[0], "sha": sha,
                                "private": r.private, "library_name": "artattr", "tags": [],
                                "siblings": [{"rfilename": p} for p in sorted(r.commits[sha])]})

        def tree(self, repo: str, rev: str, path: str = ""):
            r = self._repo(repo)
            files = r.commits[self._sha(r, rev)]
            prefix = path.rstrip("/") + "/" if path else ""
            recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
            entries, folders = [], set()
            for p, data in sorted(files.items()):
                if not p.startswith(prefix):
                    continue
                rest = p[len(prefix):]
                parts = rest.split("/")
                for depth in range(1, len(parts)):
                    folder = prefix + "/".join(parts[:depth])
                    if (recursive or depth == 1) and folder not in folders:
                        folders.add(folder)
                        entries.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "size": 0,
                                        "path": folder})
                if recursive or len(parts) == 1:
                    entries.append({"type": "file", "oid": git_blob_sha(data), "size": len(data), "path": p})
            return _Reply(200, entries)

        def preupload(self, repo: str, rev: str):
            r = self._repo(repo, write=True)
            self._sha(r, rev)
            files = json.loads(self.body)["files"]
            return _Reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                          for f in files], "commitOid": r.refs.get(rev)})

        def commit(self, repo: str, rev: str):
            r = self._repo(repo, write=True)
            parent = self._sha(r, rev)
            message, files, deleted = "", {}, set()
            for line in self.body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                value = item["value"]
                if item["key"] == "header":
                    message = value.get("summary", "")
                    if value.get("parentCommit") and value["parentCommit"] != parent:
                        raise _error(412, "A commit has happened since. Please refresh and try again.")
                elif item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] in ("deletedFile", "deletedFolder"):
                    deleted.add(value["path"])
                else:
                    raise _error(400, f"unsupported commit operation {item['key']!r} (this server takes regular files only)")
            sha = hub.commit(r, parent, files, deleted, message)
            if rev in r.refs or rev == "main":
                r.refs[rev] = sha
            return _Reply(200, {"success": True, "commitOid": sha, "commitUrl": f"{hub.url}/{repo}/commit/{sha}",
                                "commitMessage": message, "pullRequestUrl": None})

        def resolve(self, repo: str, rev: str, path: str):
            r = self._repo(repo)
            sha = self._sha(r, rev)
            data = r.commits[sha].get(path)
            if data is None:
                raise _Reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound",
                                                                 "X-Error-Message": "Entry not found", "X-Repo-Commit": sha})
            return _Reply(200, data, {"ETag": f'"{git_blob_sha(data)}"', "X-Repo-Commit": sha,
                                      "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"})

    return Handler


def point_client_at(monkeypatch, url: str, home) -> None:
    """Aim an imported ``huggingface_hub`` at ``url`` with its cache and token under ``home``.

    ``huggingface_hub.constants`` computes ENDPOINT, the download URL template and the cache
    paths from the environment once, at import; the download/upload code reads them from the
    module at call time, so patching the module (and the environment, for code that reads it
    again) is enough. ``train.push`` builds its ``HfApi`` per call, so it follows too.
    """
    from huggingface_hub import constants

    home = str(home)
    for name, value in (("HF_ENDPOINT", url), ("HF_HOME", home), ("HF_HUB_DISABLE_TELEMETRY", "1"),
                        ("HF_HUB_OFFLINE", "0")):
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HOME", home)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", f"{home}/hub")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", f"{home}/token")
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", f"{home}/stored_tokens")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
