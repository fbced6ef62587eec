"""Models named by hub id or URL: fetched once into a cache with a lock file, then read offline.

Every model key of the config (``MODEL_KEYS``) takes a local path as before, or

* ``hf:<org>/<name>[@<revision>]``: a Hugging Face Hub repository at a branch, tag or full commit
  (``main`` when none is given). ``fetch`` downloads the files the loaders read (``select_files``:
  configs, tokenizer files, code, and one weight format) into the Hugging Face cache (``hub.cache``,
  default ``HF_HUB_CACHE``), checks each against the hash the Hub gives, and records the resolved
  commit and every file's sha256 and size in the lock file (``hub.lock``).
* ``https://...``: one file (VGGish's ``vggish-10086976.pth``), fetched with torch.hub's
  ``download_url_to_file`` and checked against the sha256 prefix its name carries (torch.hub's
  convention), into torch.hub's checkpoint folder (``<TORCH_HOME>/hub/checkpoints``, or
  ``<hub.cache>/checkpoints`` when ``hub.cache`` is set).

Everything else reads offline (``resolve_config``): a fetched source becomes its snapshot folder
(the lock's commit first, so a later fetch of another commit of the same branch changes nothing
until the lock does); one not fetched stays as written, and its loaders and ``check-config`` say
which command fetches it. Nothing here imports a model's code: MiniCPM-o's ``*.py`` files are
downloaded and listed, never run (``captions.trust_remote_code`` decides that, when it loads).
"""
from __future__ import annotations

import contextlib
import copy
import glob
import hashlib
import json
import logging
import os
import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ssp.io.files import write_text

log = logging.getLogger(__name__)

# every config key that names a model, and what its loaders read from the files fetched for it
MODEL_KEYS = {
    "flow.perceiver.weights": "model",
    "captions.model": "model",
    "model.mask2former": "model",
    "model.clip": "model",
    "model.text_encoder": "model",
    "model.tokenizer": "tokenizer",
    "vggish.weights": "file",
}
YOUR_CONFIG_FILES = "<your config files>"   # in a message: the files of the command that was run, where known
FETCH_COMMAND = f"python -m ssp fetch-models --config {YOUR_CONFIG_FILES} (or: snakemake models --configfile ...)"


def with_config_files(message: str, files) -> str:
    """``message`` with its commands (fetch-models, trust-code) naming the config files of the
    command that was run."""
    names = shlex.join(map(str, files))
    return message.replace(FETCH_COMMAND, f"python -m ssp fetch-models --config {names}").replace(YOUR_CONFIG_FILES, names)
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[\w.+-]+$")
_REVISION = re.compile(r"^[\w.+-]+(/[\w.+-]+)*$")
_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")   # torch.hub's HASH_REGEX: vggish-10086976.pth -> 10086976


class FetchError(RuntimeError):
    """A model could not be fetched or failed its check; the message names the key and the file."""


class Pending(str):
    """A config problem that fetching the models resolves (or, for MiniCPM-o's code, trusting it
    after reading what was fetched): not one for the command that fetches them."""


@dataclass(frozen=True)
class HubModel:
    repo: str
    revision: str

    @property
    def source(self) -> str:
        return f"hf:{self.repo}@{self.revision}"

    @property
    def folder_name(self) -> str:
        """The repository's folder in the Hugging Face cache (huggingface_hub's naming)."""
        return "models--" + self.repo.replace("/", "--")


def _plain(name: str) -> bool:
    """A name that stays inside the folder it is joined to: no separator, not ``.`` or ``..``."""
    return bool(_NAME.match(name)) and name not in (".", "..")


def revision_problem(revision: str) -> str | None:
    """Why a revision cannot be a branch, tag or commit name (it becomes a path in the cache: a
    ``refs/<revision>`` file), or None."""
    if not _REVISION.match(revision) or any(not _plain(part) for part in revision.split("/")):
        return f"revision {revision!r} is not a branch, tag or commit name (letters, digits, . _ - and / between names)"
    return None


def parse_hub(value, key: str = "") -> HubModel | None:
    """``hf:org/name[@revision]`` -> HubModel; None for anything else (a path, ``random``, a package)."""
    if not (isinstance(value, str) and value.startswith("hf:")):
        return None
    repo, _, revision = value[3:].partition("@")
    if not _REPO.match(repo) or "@" in revision or any(not _plain(p) for p in repo.split("/")):
        raise ValueError(f"'{key}': {value!r} is not a hub id (hf:<org>/<name> or hf:<org>/<name>@<revision>)")
    problem = revision_problem(revision or "main")
    if problem:
        raise ValueError(f"'{key}': {value!r}: {problem}")
    return HubModel(repo, revision or "main")


def is_url(value) -> bool:
    return isinstance(value, str) and value.startswith(("https://", "http://"))


def get_key(tree: dict, key: str):
    for part in key.split("."):
        if not isinstance(tree, dict):
            return None
        tree = tree.get(part)
    return tree


def _set_key(tree: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for part in parents:
        tree = tree[part]
    tree[last] = value


# --------------------------------------------------------------------------- where things live

def hf_cache(raw: dict) -> Path:
    """The Hugging Face cache the hub ids are fetched into and read from: ``hub.cache``, or
    huggingface_hub's own (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    chosen = (raw.get("hub") or {}).get("cache")
    if chosen:
        return Path(chosen).expanduser()
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def url_dir(raw: dict) -> Path:
    """Where URL sources go: ``<hub.cache>/checkpoints``, or torch.hub's checkpoint folder
    (``torch.hub.get_dir()/checkpoints``: ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``),
    computed without importing torch (planning does not)."""
    chosen = (raw.get("hub") or {}).get("cache")
    if chosen:
        return Path(chosen).expanduser() / "checkpoints"
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def lock_path(raw: dict) -> Path:
    return Path((raw.get("hub") or {}).get("lock") or "models.lock.json")


def read_lock(path: Path) -> dict:
    """The lock file's entries by source (``hf:org/name@rev`` or the URL); {} when there is none.
    Every entry is checked before anything is joined to a path: a commit is 40 hex digits, a file
    name is a plain name, a hash is a sha256 (``lock_problems``)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FetchError(f"'hub.lock': {path} is not valid JSON ({exc}); delete it and fetch again") from None
    models = data.get("models", {}) if isinstance(data, dict) else None
    problems = lock_problems(models) if isinstance(models, dict) else ["its 'models' is not a mapping"]
    if problems:
        raise FetchError(f"'hub.lock': {path} is not a lock this project wrote ({'; '.join(problems[:3])}): "
                         "restore it, or delete it and fetch again")
    return models


def lock_problems(models: dict) -> list[str]:
    """What in a lock's entries could point outside the cache, or is no hash."""
    out = []
    for source, entry in models.items():
        if not isinstance(entry, dict):
            out.append(f"{source}: not a mapping")
            continue
        if source.startswith("hf:"):
            commit = entry.get("commit")
            if not (isinstance(commit, str) and _COMMIT.match(commit)):
                out.append(f"{source}: commit {commit!r} is not 40 hex digits")
            files = entry.get("files")
            if not isinstance(files, dict):
                out.append(f"{source}: no file list")
                continue
            for name, meta in files.items():
                if not _plain(name):
                    out.append(f"{source}: file name {name!r} is not a plain name")
                elif not (isinstance(meta, dict) and _SHA256.match(str(meta.get("sha256")))
                          and isinstance(meta.get("size"), int)):
                    out.append(f"{source}: {name} has no sha256 and size")
        elif not (_plain(str(entry.get("file"))) and _SHA256.match(str(entry.get("sha256")))
                  and isinstance(entry.get("size"), int)):
            out.append(f"{source}: no plain file name, sha256 and size")
    return out


def write_lock(path: Path, entries: dict) -> None:
    """Entries merged over the lock's, sorted, written whole."""
    merged = read_lock(path) | entries
    write_text(path, json.dumps({"version": 1, "models": dict(sorted(merged.items()))}, indent=1, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- offline resolution

# every fetched folder or file this process resolved, by path: what ``ssp.io.verify`` checks
# against the lock before a loader reads it (the loaders are handed paths)
_FETCHED: dict[str, "Resolved"] = {}


def fetched_source(path) -> "Resolved | None":
    """How a path handed to a loader was resolved (None: a local path, not fetched)."""
    return _FETCHED.get(str(path))


@dataclass(frozen=True)
class Resolved:
    """A model key's source and where it is on disk (``path`` None: not fetched, ``problem`` says so)."""
    key: str
    source: str
    path: Path | None
    commit: str | None = None     # a hub id's resolved commit; a URL file's sha256
    problem: str | None = None
    entry: dict | None = None     # its lock entry (files, hashes, sizes), when the lock has it
    lock: Path | None = None      # the lock file it was resolved with

    @property
    def provenance(self) -> str:
        if self.source.startswith("hf:"):
            return f"{self.source.split('@')[0]}@{self.commit}"
        if self.commit is None:   # a file put there by hand, not by fetch-models
            return f"{self.source} (not in the lock)"
        return f"{self.source} sha256:{self.commit}"


def _not_fetched(key: str, source: str, where: Path, why: str) -> Pending:
    return Pending(f"'{key}': {source} is not fetched ({why} in {where}): run {FETCH_COMMAND} where the Hub "
                   "can be reached")


def resolve(value: str, key: str, raw: dict, lock: dict | None = None) -> Resolved | None:
    """A hub id or URL resolved offline to its cached folder or file; None for any other value.
    A malformed hub id resolves to nothing, with its problem (no fetch can help it)."""
    lock = read_lock(lock_path(raw)) if lock is None else lock
    try:
        model = parse_hub(value, key)
    except ValueError as exc:
        return Resolved(key, value, None, None, str(exc))
    if model is not None:
        cache = hf_cache(raw)
        entry = lock.get(model.source)
        storage = cache / model.folder_name
        commit = (entry or {}).get("commit")
        if commit is None and _COMMIT.match(model.revision):
            commit = model.revision
        if commit is None:
            ref = storage / "refs" / model.revision
            commit = ref.read_text().strip() if ref.is_file() else None
            if commit is not None and not _COMMIT.match(commit):
                return Resolved(key, model.source, None, None, f"'{key}': {ref} does not hold a commit ({commit[:60]!r}); "
                                f"delete it and run {FETCH_COMMAND}")
        folder = storage / "snapshots" / commit if commit else None
        if folder is None or not folder.is_dir():
            return Resolved(key, model.source, None, commit, _not_fetched(key, model.source, cache, "no snapshot"))
        missing = [f for f in (entry or {}).get("files", {}) if not (folder / f).is_file()]
        if missing:
            return Resolved(key, model.source, None, commit, _not_fetched(
                key, model.source, cache, f"{len(missing)} of its locked files missing, e.g. {missing[0]},"))
        return Resolved(key, model.source, folder, commit, entry=entry, lock=lock_path(raw))
    if is_url(value):
        name = url_file_name(value)
        if not _plain(name):
            return Resolved(key, value, None, None, f"'{key}': {value} does not end in a file name")
        target = url_dir(raw) / name
        entry = lock.get(value)
        if not target.is_file():
            return Resolved(key, value, None, None, _not_fetched(key, value, target.parent, "no file"))
        return Resolved(key, value, target, (entry or {}).get("sha256"), entry=entry, lock=lock_path(raw))
    return None


def url_file_name(url: str) -> str:
    """The file a URL names (its last path segment, query and fragment left out)."""
    from urllib.parse import urlsplit

    return urlsplit(url).path.rsplit("/", 1)[-1]


def resolve_config(full: dict) -> tuple[dict, dict[str, Resolved]]:
    """A validated config with every fetched hub id and URL replaced by its local path (the copy the
    stages read), and each such key's resolution (provenance, or what to fetch). Values that are
    not hub ids or URLs, and sources not fetched, are left as written."""
    sources = {k: get_key(full, k) for k in MODEL_KEYS}
    sources = {k: v for k, v in sources.items() if isinstance(v, str) and (v.startswith("hf:") or is_url(v))}
    if not sources:
        return full, {}
    lock = read_lock(lock_path(full))
    local = copy.deepcopy(full)
    resolved = {}
    for key, value in sources.items():
        r = resolve(value, key, full, lock)
        resolved[key] = r
        if r.path is not None:
            _set_key(local, key, str(r.path))
            _FETCHED[str(r.path)] = r
    return local, resolved


def parse_hub_safe(value) -> bool:
    try:
        return parse_hub(value) is not None
    except ValueError:
        return False


def provenance(raw: dict, resolved: dict[str, Resolved], keys=None) -> dict[str, str]:
    """What each model key named came from: ``hf:org/name@<commit>`` for a fetched hub id, the URL
    and sha256 of a fetched file, else the value as written (a local path, ``random``, a package)."""
    out = {}
    for key in keys or MODEL_KEYS:
        value = get_key(raw, key)
        if value is None:
            continue
        r = resolved.get(key)
        out[key] = r.provenance if r is not None and r.path is not None else str(value)
    return out


# --------------------------------------------------------------------------- fetching

WEIGHT_FORMATS = (("*.safetensors", "*.safetensors.index.json"), ("pytorch_model*.bin", "pytorch_model*.bin.index.json"))
KEEP = ("*.json", "*.py", "*.txt", "*.model", "*.tiktoken", "*.jinja")   # configs, tokenizers, chat templates, code


def select_files(names: list[str], kind: str) -> list[str]:
    """The files of a repository the loaders read: its top-level configs, tokenizer files and code,
    and one weight format (safetensors when there are any, else ``pytorch_model*.bin``; never TF,
    Flax, ONNX or a second copy of the weights). A tokenizer needs no weights."""
    from fnmatch import fnmatch

    top = [n for n in names if "/" not in n]
    weights: list[str] = []
    if kind == "model":
        for files, index in WEIGHT_FORMATS:
            weights = [n for n in top if fnmatch(n, files) or fnmatch(n, index)]
            if any(fnmatch(n, files) for n in weights):
                break
        else:
            weights = []
    other_indexes = [i for _, i in WEIGHT_FORMATS]
    rest = [n for n in top if any(fnmatch(n, p) for p in KEEP) and not any(fnmatch(n, i) for i in other_indexes)]
    return sorted(set(rest) | set(weights))


def _hexdigest(h, path: Path) -> str:
    """``h`` (a hashlib object) fed a file in blocks."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    return _hexdigest(hashlib.sha256(), path)


def _drop(path: Path) -> None:
    """A cached file and the blob its snapshot link points at."""
    blob = Path(os.path.realpath(path))
    path.unlink(missing_ok=True)
    if blob != path:
        blob.unlink(missing_ok=True)


def _cached(entry: dict | None, folder: Path | None) -> bool:
    return bool(entry and folder and all((folder / f).is_file() and (folder / f).stat().st_size == meta["size"]
                                         for f, meta in entry["files"].items()))


def _has_weights(entry: dict) -> bool:
    """Whether a locked file list holds a weight file (not so when only a tokenizer was fetched)."""
    from fnmatch import fnmatch

    return any(fnmatch(f, p) for f in entry["files"] for p, _ in WEIGHT_FORMATS)


@contextlib.contextmanager
def _hub_errors(key: str, model: "HubModel", endpoint: str, revision: str | None = None):
    """What the Hub or the connection answers, as a FetchError naming the key (the fetch goes on
    with the other models and records what it fetched)."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        yield
    except FetchError:
        raise
    except RevisionNotFoundError:
        raise FetchError(f"'{key}': {model.repo} has no revision {revision!r} on {endpoint} (give a branch, a tag "
                         "or a full 40-digit commit)") from None
    except RepositoryNotFoundError:
        raise FetchError(f"'{key}': no repository {model.repo} on {endpoint} (or it is private or gated: log in "
                         "with `hf auth login` after accepting its terms)") from None
    except HfHubHTTPError as exc:
        raise FetchError(f"'{key}': {endpoint} answered {exc.response.status_code} for {model.repo}") from None
    except Exception as exc:   # no connection (httpx's errors), offline mode, an incomplete snapshot
        raise FetchError(f"'{key}': cannot reach {endpoint} for {model.repo} ({type(exc).__name__}: {exc}); "
                         "fetch where the Hub can be reached (HF_HUB_OFFLINE unset)") from None


def _fetch_hub(keys: list[str], model: HubModel, raw: dict, lock: dict, *, dry_run: bool, verify: bool,
               update: bool) -> dict:
    """One repository at one revision, for every key that names it (BLIP's repository serves both
    ``model.text_encoder`` and ``model.tokenizer``): the files of the hungriest of them, once."""
    from huggingface_hub import HfApi, snapshot_download

    key = ", ".join(keys)
    kind = "model" if any(MODEL_KEYS[k] == "model" for k in keys) else MODEL_KEYS[keys[0]]
    cache = hf_cache(raw)
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    entry = None if update else lock.get(model.source)
    if entry and not verify:
        r = resolve(model.source, keys[0], raw, lock)
        if _cached(entry, r.path) and (kind != "model" or _has_weights(entry)):
            return {"key": key, "source": model.source, "commit": entry["commit"], "files": len(entry["files"]),
                    "bytes": sum(m["size"] for m in entry["files"].values()), "status": "cached",
                    "folder": r.path, "code": entry.get("code", []), "entry": entry}
    revision = entry["commit"] if entry else model.revision
    with _hub_errors(key, model, endpoint, revision):
        info = HfApi(endpoint=endpoint).model_info(model.repo, revision=revision, files_metadata=True)
    meta = {s.rfilename: s for s in info.siblings or []}
    names = select_files(list(meta), kind)   # one weight format: more than allow_patterns can say
    base = {"key": key, "source": model.source, "commit": info.sha, "files": len(names),
            "bytes": sum(meta[n].size or 0 for n in names), "code": [n for n in names if n.endswith(".py")]}
    # huggingface_hub downloads (into its cache layout, resuming, in parallel) and verifies; ours is
    # the choice of files, the lock and its sha256 of every file, and refusing what does not match
    where = {"repo_id": model.repo, "revision": info.sha, "cache_dir": str(cache), "endpoint": endpoint,
             "allow_patterns": [glob.escape(n) for n in names]}
    if not names:
        raise FetchError(f"'{key}': {model.repo} at {info.sha[:12]} holds none of the files a {kind} is read from "
                         f"(configs, {'weights, ' if kind == 'model' else ''}tokenizer files): is it the right repository?")
    with _hub_errors(key, model, endpoint):
        if dry_run:
            plan = snapshot_download(**where, dry_run=True)
            return base | {"status": "would download", "bytes": sum(f.file_size or 0 for f in plan if f.will_download),
                           "list": [(f.filename, f.file_size or 0, f.is_cached)
                                    for f in sorted(plan, key=lambda f: f.filename)]}
        folder = Path(snapshot_download(**where))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FetchError(f"'{key}': {model.repo} at {info.sha[:12]}: {', '.join(missing)} not downloaded into {folder}")
        # huggingface_hub's verification of exactly these files (the snapshot may hold others that
        # other tools fetched, which are not ours to hash): a folder of links to them
        with tempfile.TemporaryDirectory(prefix="ssp-verify-") as links:
            for name in names:
                (Path(links) / name).parent.mkdir(parents=True, exist_ok=True)
                (Path(links) / name).symlink_to(os.path.realpath(folder / name))
            checked = HfApi(endpoint=endpoint).verify_repo_checksums(model.repo, revision=info.sha, local_dir=links)
    bad = {m["path"]: m for m in checked.mismatches}
    for name, m in bad.items():
        _drop(folder / name)
    if bad:
        raise FetchError(f"'{key}': " + "; ".join(
            f"{model.repo}/{name} at {info.sha[:12]} does not match its hash ({m['algorithm']}: expected "
            f"{m['expected']}, got {m['actual']})" for name, m in bad.items())
            + ": the download or the cached copy is corrupt, and was removed; fetch again")
    if checked.extra_paths:   # a file the commit's tree does not list: not the Hub's, so not trusted
        raise FetchError(f"'{key}': {model.repo} at {info.sha[:12]} does not list {', '.join(checked.extra_paths)}")
    files = {}
    for name in names:
        path = folder / name
        sib = meta[name]   # an LFS file's sha256 is the Hub's, just verified; a small file's is hashed here
        digest = sib.lfs.sha256 if sib.lfs is not None else _sha256(path)
        if entry and name in entry["files"] and digest != entry["files"][name]["sha256"]:
            # the file is the Hub's: the lock is what is wrong, and the file is kept
            raise FetchError(f"'{key}': {model.repo}/{name} at {info.sha[:12]} matches the Hub's hash but not the "
                             f"lock's ({entry['files'][name]['sha256']} in {lock_path(raw)}): the lock was edited or "
                             "damaged; the cached file was kept. Restore the lock, or fetch with --update to write "
                             "its entry anew")
        files[name] = {"sha256": digest, "size": path.stat().st_size}
    if model.revision != info.sha:   # as huggingface_hub records a branch or tag
        ref = cache / model.folder_name / "refs" / model.revision
        write_text(ref, info.sha)
    locked = {"repo": model.repo, "revision": model.revision, "commit": info.sha, "files": files,
              "code": base["code"]}
    status = "verified" if entry else "fetched"
    return base | {"status": status, "folder": folder, "entry": locked}


def _fetch_url(key: str, url: str, raw: dict, lock: dict, *, dry_run: bool, verify: bool) -> dict:
    name = url_file_name(url)
    if not _plain(name):
        raise FetchError(f"'{key}': {url} does not end in a file name")
    target = url_dir(raw) / name
    entry = lock.get(url)
    prefix = (_HASH_IN_NAME.search(name) or [None, None])[1] or None
    base = {"key": key, "source": url, "files": 1, "code": [], "folder": target}
    if dry_run:
        if target.is_file():
            return base | {"commit": None, "bytes": target.stat().st_size, "status": "cached"}
        n = _remote_size(url)
        if n is None:
            raise FetchError(f"'{key}': cannot reach {url}; fetch where it can be reached")
        return base | {"commit": None, "bytes": n, "status": "would download", "list": [(name, n, False)]}
    if target.is_file() and entry and not verify and target.stat().st_size == entry["size"]:
        return base | {"commit": entry["sha256"], "bytes": entry["size"], "status": "cached", "entry": entry}
    status = "verified"
    if not target.is_file():
        import torch.hub

        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(target), hash_prefix=prefix, progress=True)
        except RuntimeError as exc:   # torch.hub: "invalid hash value" (the partial file is removed)
            raise FetchError(f"'{key}': {url}: {exc}") from None
        except OSError as exc:
            raise FetchError(f"'{key}': cannot download {url} ({exc})") from None
        status = "fetched"
    digest = _sha256(target)
    expected = (entry or {}).get("sha256")
    if expected and digest != expected and (not prefix or digest.startswith(prefix)):
        raise FetchError(f"'{key}': {target} has sha256 {digest}, the lock {expected} ({lock_path(raw)})"
                         + (", and its name's prefix agrees with the file: the lock was edited or damaged"
                            if prefix else "") + "; the file was kept. Restore the lock, or delete the file "
                         "(or its entry in the lock) and fetch again")
    if (prefix and not digest.startswith(prefix)) or (expected and digest != expected):
        target.unlink()
        raise FetchError(f"'{key}': {target} has sha256 {digest}, not {expected or prefix + '...'} (its name's "
                         "prefix or the lock's): the file is corrupt and was removed; fetch again")
    if not prefix:
        log.warning("%s: %s carries no sha256 prefix in its name; its sha256 is recorded in the lock", key, name)
    locked = {"url": url, "file": name, "sha256": digest, "size": target.stat().st_size}
    return base | {"commit": digest, "bytes": locked["size"], "status": status, "entry": locked}


def _remote_size(url: str) -> int | None:
    """A file's size as its server gives it (HEAD, redirects followed); 0 where it says nothing,
    None where the server cannot be reached or refuses."""
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30) as resp:
            return int(resp.headers.get("Content-Length") or 0)
    except (OSError, ValueError):
        return None


def unused(raw: dict, key: str) -> str | None:
    """Why a model key names nothing this config runs (its stage's backend reads no model), or None.
    The network's keys are always fetched: `snakemake ablations` trains the text variants too."""
    flow, captions = raw.get("flow") or {}, raw.get("captions") or {}
    if key == "flow.perceiver.weights" and flow.get("backend", "perceiver") != "perceiver":
        return f"flow.backend is {flow.get('backend')}"
    if key == "captions.model" and captions.get("backend", "minicpm-o") not in ("minicpm-o", "hf-vlm"):
        return f"captions.backend is {captions.get('backend')}"
    return None


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# the user's own HF_HUB_OFFLINE, kept where the workflow sets its own for its jobs
USER_OFFLINE = "SSP_USER_HF_HUB_OFFLINE"


def user_offline() -> bool:
    """The user asked for no network (HF_HUB_OFFLINE=1, yes, on or true, as huggingface_hub reads
    it), before the workflow set it for its jobs."""
    value = os.environ.get(USER_OFFLINE, os.environ.get("HF_HUB_OFFLINE", ""))
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def go_offline() -> None:
    """huggingface_hub / transformers in this process and its children read the cache only
    (HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1; huggingface_hub's switch too where it was imported
    already, since it reads the variable at import): the workflow's jobs never download. The user's
    own HF_HUB_OFFLINE is kept (``USER_OFFLINE``), so that fetching still honours it."""
    os.environ.setdefault(USER_OFFLINE, os.environ.get("HF_HUB_OFFLINE", ""))
    for name in OFFLINE_VARIABLES:
        os.environ[name] = "1"
    import sys

    if "huggingface_hub.constants" in sys.modules:
        sys.modules["huggingface_hub.constants"].HF_HUB_OFFLINE = True


@contextlib.contextmanager
def offline():
    """``go_offline`` for the length of a block (a command of the CLI), restored after it."""
    import sys

    before = {name: os.environ.get(name) for name in (*OFFLINE_VARIABLES, USER_OFFLINE)}
    constants = sys.modules.get("huggingface_hub.constants")
    switch = getattr(constants, "HF_HUB_OFFLINE", None)
    go_offline()
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if constants is not None:
            constants.HF_HUB_OFFLINE = switch


@contextlib.contextmanager
def _online():
    """huggingface_hub's offline switch off while fetching: fetching is the one thing asked to go
    online, even where the workflow set HF_HUB_OFFLINE=1 for its jobs (the switch is read at
    import); a user's own HF_HUB_OFFLINE=1 stops ``fetch`` before this."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def fetch(raw: dict, *, dry_run: bool = False, verify: bool = False, update: bool = False) -> list[dict]:
    """Fetch every hub id and URL a validated config names, check each file's hash, and record the
    resolved commits and hashes in the lock (not with ``dry_run``, which lists what would come
    down). A source the lock holds with every file cached is not asked for again (``verify``:
    hash the cached files against the Hub's and the lock's; ``update``: resolve branches anew).
    Returns one report row per model."""
    if user_offline():
        raise FetchError("HF_HUB_OFFLINE is set in your environment: fetching needs the Hub (and VGGish's URL); "
                         "unset it for this command (every other command and job reads the cache offline anyway)")
    lock_file = lock_path(raw)
    lock = read_lock(lock_file)
    rows, errors = [], []
    by_source: dict[str, list[str]] = {}   # each source once, for every key that names it
    for key in MODEL_KEYS:
        value = get_key(raw, key)
        why = unused(raw, key)
        if why and (parse_hub_safe(value) or is_url(value)):
            log.info("%s: %s not fetched: %s, which reads no model", key, value, why)
            continue
        try:
            model = parse_hub(value, key)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        if model is not None:
            by_source.setdefault(model.source, []).append(key)
        elif is_url(value):
            by_source.setdefault(value, []).append(key)
    with _online():
        for source, keys in by_source.items():
            try:
                if is_url(source):
                    rows.append(_fetch_url(", ".join(keys), source, raw, lock, dry_run=dry_run, verify=verify))
                else:
                    rows.append(_fetch_hub(keys, parse_hub(source), raw, lock, dry_run=dry_run, verify=verify,
                                           update=update))
            except FetchError as exc:
                errors.append(str(exc))
    if not dry_run:
        entries = {r["source"]: r["entry"] for r in rows if "entry" in r}
        if entries:
            write_lock(lock_file, entries)
    if errors:
        raise FetchError("\n".join(errors))
    return rows


def report(rows: list[dict], lock_file: Path) -> str:
    """The fetch's table, with the code a user should read before trusting it."""
    def size(n: int) -> str:
        for unit in ("B", "KB", "MB", "GB"):
            if n < 1000 or unit == "GB":
                return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
            n /= 1000
        return ""

    lines = [f"{'key':<24} {'status':<15} {'files':>5} {'size':>9}  source -> resolved"]
    for r in rows:
        resolved = (r.get("commit") or "")[:12]
        lines.append(f"{r['key']:<24} {r['status']:<15} {r['files']:>5} {size(r['bytes']):>9}  {r['source']}"
                     + (f" -> {resolved}" if resolved else ""))
        for name, n, cached in r.get("list", []):
            lines.append(f"{'':<24}   {name} ({size(n)}{', cached' if cached else ''})")
    if any("list" in r for r in rows):   # a dry run
        lines.append(f"total {size(sum(r['bytes'] for r in rows if 'list' in r))} to download")
    else:
        lines.append(f"total {size(sum(r['bytes'] for r in rows))}; lock: {lock_file}")
    for r in rows:
        if r["code"]:
            where = r.get("folder") or r["source"]
            lines.append(f"\n{r['key']} ships code that runs when the model loads; read it before setting "
                         f"captions.trust_remote_code: true (nothing of it has run):")
            files = (r.get("entry") or {}).get("files", {})
            lines += [f"  {Path(where) / n}" + (f"  sha256:{files[n]['sha256']}" if n in files else "")
                      for n in r["code"]]
            lines.append(f"then trust exactly this code: python -m ssp trust-code --config {YOUR_CONFIG_FILES}")
    return "\n".join(lines)
