"""A local stand-in for the Hugging Face Hub and a release-file host, for the fetch tests.

It answers the requests ``huggingface_hub`` makes to fetch and verify files (a repository's file
list at a revision, HEAD and GET of each file, and the recursive tree ``verify_repo_checksums``
compares the cache with), and plain GETs of URL files. It binds to
127.0.0.1 only, refuses any other client, counts the requests it answers, and stops with its
``with`` block. Nothing leaves the machine: tests point ``HF_ENDPOINT`` at it.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LFS = (".safetensors", ".bin", ".pth", ".pt")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class FakeHub:
    """``repos[repo] = {"refs": {"main": commit}, "commits": {commit: {name: bytes}}}``;
    ``files[name] = bytes`` served at ``/files/<name>``; ``corrupt`` = {(repo, name)}: served with
    one byte changed, under the intact file's hashes."""

    def __init__(self):
        self.repos: dict[str, dict] = {}
        self.files: dict[str, bytes] = {}
        self.corrupt: set[tuple[str, str]] = set()
        self.requests: list[str] = []
        self._server = None

    # ------------------------------------------------------------------ content
    def add_folder(self, repo: str, folder: Path, commit: str, ref: str | None = "main") -> str:
        """A folder's files (top level and below) as one commit of ``repo``."""
        files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        entry = self.repos.setdefault(repo, {"refs": {}, "commits": {}})
        entry["commits"][commit] = files
        if ref:
            entry["refs"][ref] = commit
        return commit

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------ server
    def __enter__(self) -> "FakeHub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):   # quiet
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _send(self, code: int, data: bytes = b"", headers: dict | None = None, body: bool = True):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _answer(self, body: bool):
                if self.client_address[0] != "127.0.0.1":
                    return self._send(403, b"loopback only", body=body)
                hub.requests.append(f"{self.command} {self.path}")
                path = self.path.split("?", 1)[0]
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
                if m:
                    return self._info(m.group(1), m.group(2), body)
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path)
                if m:
                    return self._tree(m.group(1), m.group(2), body)
                m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if m:
                    return self._file(m.group(1), m.group(2), m.group(3), body)
                m = re.fullmatch(r"/files/([^/]+)", path)
                if m and m.group(1) in hub.files:
                    return self._send(200, hub.files[m.group(1)], body=body)
                return self._send(404, b"not found", {"X-Error-Code": "EntryNotFound"}, body)

            def _commit(self, repo: str, rev: str):
                entry = hub.repos.get(repo)
                if entry is None:
                    return None, "RepoNotFound"
                commit = entry["refs"].get(rev, rev)
                return (commit, None) if commit in entry["commits"] else (None, "RevisionNotFound")

            def _info(self, repo: str, rev: str, body: bool):
                commit, error = self._commit(repo, rev)
                if error:
                    return self._not_found(error, body)
                siblings = []
                for name, data in hub.repos[repo]["commits"][commit].items():
                    sib = {"rfilename": name, "size": len(data), "blobId": git_blob_sha1(data)}
                    if name.endswith(LFS):
                        sib["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
                    siblings.append(sib)
                doc = {"id": repo, "modelId": repo, "sha": commit, "private": False, "siblings": siblings}
                self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"}, body)

            def _not_found(self, error: str, body: bool):
                return self._send(404, json.dumps({"error": error}).encode(),
                                  {"X-Error-Code": error, "Content-Type": "application/json"}, body)

            def _tree(self, repo: str, rev: str, body: bool):
                """The Hub's recursive tree listing: every file with its git blob id, an LFS file
                with its sha256 too (one page; no folders, which verification skips)."""
                commit, error = self._commit(repo, rev)
                if error:
                    return self._not_found(error, body)
                tree = []
                for name, data in hub.repos[repo]["commits"][commit].items():
                    item = {"type": "file", "path": name, "size": len(data), "oid": git_blob_sha1(data)}
                    if name.endswith(LFS):
                        item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                    tree.append(item)
                self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, body)

            def _file(self, repo: str, rev: str, name: str, body: bool):
                commit, error = self._commit(repo, rev)
                files = hub.repos[repo]["commits"][commit] if commit else {}
                if error or name not in files:
                    return self._send(404, b"", {"X-Error-Code": error or "EntryNotFound"}, body)
                data = files[name]
                etag = hashlib.sha256(data).hexdigest() if name.endswith(LFS) else git_blob_sha1(data)
                if (repo, name) in hub.corrupt:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                self._send(200, data, {"X-Repo-Commit": commit, "ETag": f'"{etag}"'}, body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
