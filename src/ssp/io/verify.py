"""Fetched models checked before they load, and model code trusted by its hashes.

``verify_fetched`` runs in the job, just before a loader reads a folder or file that
``ssp.io.hub.resolve_config`` resolved from the lock: every file the lock lists must be there
with its locked size and sha256, and a folder may hold no ``*.py`` file the lock does not list.
Code and configs are hashed every time (they are small); weight files are hashed once per file
state, remembered by (size, mtime, ctime, inode) in ``.<lock name>.verified`` beside the lock, so a
17.5 GB model is not hashed again by every job (``ctime`` and the inode change with any write or
replacement, and cannot be set back). A mismatch stops the job naming the file and the command that
fetches it again.

Code that runs when a model loads (MiniCPM-o's ``*.py``, ``trust_remote_code``) is trusted by its
hashes, not by a boolean: ``python -m ssp trust-code`` records the sha256 of every ``*.py`` of the
model's folder in the trust file beside the lock (``trust_path``), keyed by the hub repository (or
the local folder); ``captions.trust_remote_code: true`` then allows exactly that code, and code that
differs (a branch fetched anew, an edited file) is refused with what changed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from fnmatch import fnmatch
from pathlib import Path

from ssp.io import hub
from ssp.io.files import write_text
from ssp.io.weights import WeightsError

log = logging.getLogger(__name__)

REFETCH = f"python -m ssp fetch-models --verify --config {hub.YOUR_CONFIG_FILES}"
TRUST_COMMAND = f"python -m ssp trust-code --config {hub.YOUR_CONFIG_FILES}"


# what a model whose code runs when it loads (MiniCPM-o) needs before it may load
TRUST_MESSAGE = ("MiniCPM-o ships its model code inside the model folder; loading it executes that code "
                 "with your permissions. Read the folder's *.py files, then set "
                 f"'captions.trust_remote_code: true' and run `{TRUST_COMMAND}`, which records their sha256: only "
                 "that code is then allowed to run.")


class VerifyError(WeightsError):
    """A fetched file is not the file the lock names; the message names it and the repair."""


def _is_weights(name: str) -> bool:
    return any(fnmatch(name, pattern) for pattern, _ in hub.WEIGHT_FORMATS) or name.endswith((".pth", ".pt"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- fetched files

class _Memory:
    """sha256 of weight files by file state, beside the lock (kept only where it can be written)."""

    def __init__(self, lock: Path):
        self.path = lock.with_name(f".{lock.name}.verified")
        try:
            self.known = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, json.JSONDecodeError):
            self.known = {}
        self.changed = False

    @staticmethod
    def state(path: Path) -> list[int]:
        st = os.stat(path)   # the blob a snapshot link points at
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    def digest(self, path: Path) -> str:
        real, state = os.path.realpath(path), self.state(path)
        seen = self.known.get(real)
        if seen and seen["state"] == state:
            return seen["sha256"]
        started = time.perf_counter()
        digest = _sha256(path)
        log.info("verified %s against the lock (%.1f GB in %.0f s; not hashed again while it is unchanged)",
                 path, state[0] / 1e9, time.perf_counter() - started)
        self.known[real] = {"state": state, "sha256": digest}
        self.changed = True
        return digest

    def save(self) -> None:
        if not self.changed:
            return
        try:
            write_text(self.path, json.dumps(self.known, indent=0, sort_keys=True), sync=False)
        except OSError as exc:   # a read-only folder: the next job hashes again
            log.info("cannot remember verified files in %s (%s)", self.path, exc.strerror)


def verify_fetched(path, key: str) -> None:
    """Check a resolved model folder or file against its lock entry before ``key``'s loader reads
    it; nothing for a local path. Raises ``VerifyError`` naming the first file that differs."""
    r = hub.fetched_source(path)
    if r is None:
        return
    if r.entry is None:
        log.warning("%s: %s is not in the lock %s, so its files cannot be checked; run %s", key, r.source,
                    r.lock, REFETCH.replace(" --verify", ""))
        return
    memory = _Memory(r.lock)
    try:
        if "files" in r.entry:
            _verify_folder(Path(path), r, key, memory)
        else:
            _verify_file(Path(path), r.entry["sha256"], r.entry["size"], key, r, memory)
    finally:
        memory.save()


def _verify_folder(folder: Path, r, key: str, memory: _Memory) -> None:
    tokenizer_only = hub.MODEL_KEYS.get(key) == "tokenizer"
    for name, meta in sorted(r.entry["files"].items()):
        if tokenizer_only and _is_weights(name):
            continue
        _verify_file(folder / name, meta["sha256"], meta["size"], key, r, memory)
    extra = sorted(p.name for p in folder.glob("*.py") if p.name not in r.entry["files"])
    if extra:
        raise VerifyError(f"'{key}': {folder} holds code the lock does not list ({', '.join(extra)}): it was put "
                          f"there after the fetch; delete it, then run {REFETCH}")


def _verify_file(path: Path, sha256: str, size: int, key: str, r, memory: _Memory) -> None:
    where = f"'{key}': {path} ({r.source} in {r.lock})"
    if not path.is_file():
        raise VerifyError(f"{where} is missing; run {REFETCH}")
    got_size = os.stat(path).st_size
    if got_size != size:
        raise VerifyError(f"{where} has {got_size} bytes, the lock {size}: the cached file was changed or damaged; "
                          f"run {REFETCH}")
    digest = memory.digest(path) if _is_weights(path.name) else _sha256(path)
    if digest != sha256:
        raise VerifyError(f"{where} has sha256 {digest}, the lock {sha256}: the cached file was changed or damaged; "
                          f"run {REFETCH}")


# --------------------------------------------------------------------------- trusted code

def trust_path(raw: dict) -> Path:
    """The trust file beside the lock: ``models.lock.json`` -> ``models.trust.json``."""
    lock = hub.lock_path(raw)
    stem = lock.name[: -len(".lock.json")] if lock.name.endswith(".lock.json") else lock.stem
    return lock.with_name(f"{stem}.trust.json")


def code_identity(source, folder) -> str:
    """What a trust record is kept under: the hub repository (``hf:org/name``, whatever revision
    resolves to it) for a model named by hub id (``source``: the config's value), else the local
    folder's absolute path."""
    model = hub.parse_hub(source) if hub.parse_hub_safe(source) else None
    return f"hf:{model.repo}" if model is not None else str(Path(folder).resolve())


def code_hashes(folder) -> dict[str, str]:
    """sha256 of every ``*.py`` file of a model folder (the code ``trust_remote_code`` would run)."""
    return {p.name: _sha256(p) for p in sorted(Path(folder).glob("*.py"))}


def read_trust(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text()).get("trusted", {})
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise VerifyError(f"trust file {path} cannot be read ({exc}); delete it and run {TRUST_COMMAND}") from None


def untrusted(folder, identity: str, trust_file: Path) -> str | None:
    """Why the code in ``folder`` is not the code trusted for ``identity``, or None when it is."""
    record = read_trust(trust_file).get(identity)
    now = code_hashes(folder)
    if record is None and not now:   # no code of its own: nothing runs that transformers does not ship
        return None
    if record is None:
        listing = "; ".join(f"{n} sha256:{h}" for n, h in now.items()) or "no *.py files"
        return (f"the code in {folder} ({listing}) is not trusted yet: read it, then run {TRUST_COMMAND} "
                f"(it records these hashes in {trust_file})")
    trusted = record["files"]
    changes = [f"{n} changed (sha256 {now[n][:12]}..., trusted {trusted[n][:12]}...)"
               for n in sorted(set(now) & set(trusted)) if now[n] != trusted[n]]
    changes += [f"{n} added" for n in sorted(set(now) - set(trusted))]
    changes += [f"{n} removed" for n in sorted(set(trusted) - set(now))]
    if not changes:
        return None
    return (f"the code in {folder} is not the code trusted on {record.get('when', '?')} ({'; '.join(changes)}): "
            f"read it, then run {TRUST_COMMAND} to trust this code instead")


def trust(folder, identity: str, trust_file: Path) -> dict[str, str]:
    """Record the code in ``folder`` as trusted for ``identity``; returns its hashes."""
    hashes = code_hashes(folder)
    records = read_trust(trust_file)
    records[identity] = {"files": hashes, "folder": str(folder), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_text(trust_file, json.dumps({"version": 1, "trusted": records}, indent=1, sort_keys=True) + "\n")
    return hashes
