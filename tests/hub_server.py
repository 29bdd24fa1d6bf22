"""A local, test-only Hugging Face Hub on 127.0.0.1: olah (read side) + a small write extension.

What it is
----------
``LocalHub`` starts ``olah`` (PyPI ``olah`` 0.5.4, a self-hosted Hub mirror) in a subprocess, in offline
mode, serving plain git repositories from a temporary ``mirrors-path``. The real clients
(``huggingface_hub``, ``transformers``' ``from_pretrained``/``push_to_hub``, ``datasets.load_dataset``)
talk to it over real HTTP once ``HF_ENDPOINT`` points at it (``tests/conftest.py`` does that at import).

olah only serves reads. This module mounts a small FastAPI extension on olah's own ``app`` object (the
subprocess runs this file as a launcher: it imports ``olah.server.app``, prepends the routes below, and
runs uvicorn) that implements the write routes ``create_repo``/``upload_folder``/``push_to_hub``/
``Dataset.push_to_hub`` use:

- ``POST /api/repos/create`` (409 if the repo exists; ``type`` model/dataset/space; a repo without
  namespace goes to the fake user ``test-user``; like the Hub, a new repo gets an initial commit that
  holds the Hub's default ``.gitattributes``), ``DELETE /api/repos/delete``;
- ``POST /api/validate-yaml`` (YAML front matter must parse to a mapping, else 400);
- ``POST /api/{models|datasets|spaces}/{org}/{name}/preupload/{rev}``: like the Hub, files matching the
  default LFS patterns (``*.safetensors``, ``*.parquet``, ``*.bin``, ...), binary samples or files of
  10 MiB and more are "lfs", the rest "regular"; ``oid`` of unchanged files is reported so the
  client skips no-op uploads. LFS files go through the git-LFS batch API
  ``POST /[datasets/]{org}/{name}.git/info/lfs/objects/batch`` (basic transfer) and a ``PUT`` into
  ``<repo>/.git/lfs/objects`` (olah serves such pointer files natively). ``LocalHub(lfs="never")`` or
  ``hub.lfs_mode("never")`` makes every file "regular" (then ``Dataset.push_to_hub`` breaks, as it
  deletes its temporary parquet shards after the LFS pre-upload);
- ``POST /api/{type}s/{org}/{name}/commit/{rev}``: NDJSON ``header`` (``parentCommit`` checked, 412
  on mismatch), ``file`` (base64 or utf-8), ``lfsFile``, ``deletedFile`` (404 EntryNotFound if
  absent), ``deletedFolder``; committed with ``git fast-import`` into the mirror, then olah's offline
  cache files (``resolved_commit.json`` per branch/tag, exactly one ``meta_head.json``) are refreshed;
- ``GET /api/{type}s/{org}/{name}/commits/{rev}`` (olah's lacks the ``user`` field the client reads),
  ``POST/DELETE .../branch/{branch}`` and ``.../tag/{rev}``;
- ``GET /api/whoami-v2``: fake user ``test-user`` (member of org ``test-org``) for any token (the client
  itself refuses to call it without one);
- a middleware that gives Hub-like errors where offline olah gives a 401 RepoNotFound: an unknown
  revision of an existing repo -> 404 ``RevisionNotFound``; a missing file in an existing revision
  -> 404 ``EntryNotFound`` (resolve URLs and ``/api/.../{revision|tree|paths-info}/{rev}`` routes).
  A missing repo stays olah's 401 ``RepoNotFound`` (the Hub answers the same to anonymous callers).
- ``POST /__localhub__/settings`` ``{"lfs": "auto"|"never"}`` (test helper, ``LocalHub.set_lfs``).

Limits (test-only!)
-------------------
- No auth: every token (or none) may read and write everything; private/gated flags are ignored.
- No Xet: the client must run with ``HF_HUB_DISABLE_XET=1`` (conftest sets it), else it tries to
  upload LFS files through Xet and fails.
- No PRs (``create_pr=True`` -> 400), no discussions, no ``refs/convert``, no squash, no copies of
  LFS files between repos, no multipart LFS, no spaces runtime, no rate limits, no search/listing APIs
  beyond olah's. Tests should use the single branch ``main``; extra branches/tags exist only as far
  as the routes above go.
- Upload size is bounded only by memory (the whole NDJSON body is read at once).
- Bound to 127.0.0.1, one process, one worker; it is a test fixture, never a server to expose.
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` class in the route
# signatures defined inside add_write_routes (fastapi is imported there, not at module level).

import atexit
import base64
import contextlib
import datetime as _dt
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import unquote

REPO_TYPES = {"model": "models", "dataset": "datasets", "space": "spaces"}
PLURAL_TO_TYPE = {v: k for k, v in REPO_TYPES.items()}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
DEFAULT_BRANCH = "main"
FAKE_USER = "test-user"
FAKE_ORG = "test-org"
LFS_THRESHOLD = 10 * 1024 * 1024
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"

# The Hub's default .gitattributes for new repos (shortened to the patterns that matter here).
LFS_PATTERNS = [
    "*.7z",
    "*.arrow",
    "*.bin",
    "*.bz2",
    "*.ckpt",
    "*.ftz",
    "*.gz",
    "*.h5",
    "*.joblib",
    "*.lfs.*",
    "*.mlmodel",
    "*.model",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.onnx",
    "*.ot",
    "*.parquet",
    "*.pb",
    "*.pickle",
    "*.pkl",
    "*.pt",
    "*.pth",
    "*.rar",
    "*.safetensors",
    "saved_model/**/*",
    "*.tar.*",
    "*.tar",
    "*.tflite",
    "*.tgz",
    "*.wasm",
    "*.xz",
    "*.zip",
    "*.zst",
    "*tfevents*",
]
HUB_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()

FileContent = bytes | str | os.PathLike


# --------------------------------------------------------------------------------------------------
# git helpers, shared by the test process (LocalHub) and the server process (write routes)
# --------------------------------------------------------------------------------------------------


def _git_env() -> dict[str, str]:
    env = dict(os.environ)
    # Isolate from user/system git config (git-lfs filters, hooks, signing, templates...).
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME=FAKE_USER,
        GIT_AUTHOR_EMAIL=f"{FAKE_USER}@localhub.invalid",
        GIT_COMMITTER_NAME=FAKE_USER,
        GIT_COMMITTER_EMAIL=f"{FAKE_USER}@localhub.invalid",
    )
    for k in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(k, None)
    return env


def _git(repo: str | Path, *args: str, input: bytes | None = None, check: bool = True) -> bytes:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args],
        input=input,
        capture_output=True,
        env=_git_env(),
        timeout=60,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {repo}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


@contextlib.contextmanager
def _repo_lock(repo: str | Path):
    lock_path = Path(repo) / ".git" / "localhub.lock"
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def git_init(repo: str | Path) -> None:
    Path(repo).mkdir(parents=True, exist_ok=False)
    _git(repo, "init", "-q", "-b", DEFAULT_BRANCH)


def git_resolve(repo: str | Path, rev: str) -> str | None:
    """Commit sha of ``rev`` (branch, tag, full or short sha), or None."""
    if not rev or rev.startswith("-"):
        return None
    out = _git(repo, "rev-parse", "--verify", "-q", f"{rev}^{{commit}}", check=False).strip()
    return out.decode() or None


def git_refs(repo: str | Path) -> dict[str, str]:
    """{short ref name: commit sha} for branches and tags."""
    out = _git(
        repo, "for-each-ref", "--format=%(refname:short) %(*objectname) %(objectname)", "refs/heads", "refs/tags"
    ).decode()
    refs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:  # not an annotated tag
            refs[parts[0]] = parts[1]
        elif len(parts) == 3:
            refs[parts[0]] = parts[1]
    return refs


def git_list_files(repo: str | Path, rev: str = DEFAULT_BRANCH) -> list[str]:
    sha = git_resolve(repo, rev)
    if sha is None:
        raise KeyError(f"revision {rev!r} not found in {repo}")
    out = _git(repo, "ls-tree", "-r", "-z", "--name-only", sha)
    return sorted(p.decode() for p in out.split(b"\0") if p)


def git_blob_oids(repo: str | Path, rev: str, paths: Iterable[str]) -> dict[str, str]:
    """{path: blob sha} for the given paths that exist at ``rev`` (files only)."""
    sha = git_resolve(repo, rev)
    paths = list(paths)
    if sha is None or not paths:
        return {}
    out = _git(repo, "ls-tree", "-r", "-z", sha)
    wanted = set(paths)
    oids = {}
    for entry in out.split(b"\0"):
        if not entry:
            continue
        meta, path = entry.split(b"\t", 1)
        mode, kind, oid = meta.split()
        p = path.decode()
        if kind == b"blob" and p in wanted:
            oids[p] = oid.decode()
    return oids


def git_cat(repo: str | Path, rev: str, path: str) -> bytes | None:
    sha = git_resolve(repo, rev)
    if sha is None:
        return None
    proc = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "blob", f"{sha}:{path}"], capture_output=True, env=_git_env(), timeout=60
    )
    return proc.stdout if proc.returncode == 0 else None


def git_exists(repo: str | Path, rev: str, path: str) -> bool:
    """Whether ``path`` is a file (blob) at commit/ref ``rev``."""
    out = _git(repo, "cat-file", "-t", f"{rev}:{path}", check=False).strip()
    return out == b"blob"


def git_log(repo: str | Path, rev: str, max_count: int = 1000) -> list[dict]:
    """Hub-style commit list (newest first) for ``rev``."""
    out = _git(repo, "log", f"--max-count={max_count}", "--format=%H%x00%an%x00%ct%x00%s%x00%b%x1e", rev)
    commits = []
    for rec in out.decode(errors="replace").split("\x1e"):
        rec = rec.strip("\n")
        if not rec:
            continue
        sha, author, stamp, title, body = rec.split("\x00")
        date = _dt.datetime.fromtimestamp(int(stamp), _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        commits.append(
            {
                "id": sha,
                "title": title,
                "message": body.strip(),
                "date": date,
                "authors": [{"user": author, "avatar": None}],
            }
        )
    return commits


def _lfs_object_path(repo: str | Path, oid: str) -> Path:
    return Path(repo) / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid


_POINTER_RE = re.compile(rb"version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize (\d+)\n$")


def git_read_file(repo: str | Path, rev: str, path: str) -> bytes | None:
    """File content at ``rev``, LFS pointers resolved to the stored object."""
    data = git_cat(repo, rev, path)
    if data is not None and len(data) < 200:
        m = _POINTER_RE.match(data)
        if m:
            obj = _lfs_object_path(repo, m.group(1).decode())
            if obj.exists():
                return obj.read_bytes()
    return data


def _fi_path(path: str) -> bytes:
    """A path quoted for git fast-import."""
    if "\n" in path or "\0" in path:
        raise ValueError(f"invalid path in repo: {path!r}")
    return b'"' + path.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def _check_repo_path(path: str) -> str:
    p = path.replace("\\", "/")
    parts = p.split("/")
    if not p or p.startswith("/") or any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise ValueError(f"invalid path in repo: {path!r}")
    return p


def _as_bytes(content: FileContent) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode()
    return Path(content).read_bytes()


def git_commit(
    repo: str | Path,
    files: Mapping[str, FileContent] | None = None,
    deletions: Iterable[str] = (),
    message: str = "commit",
    branch: str = DEFAULT_BRANCH,
    parent: str | None = None,
) -> str:
    """Commit ``files`` (path -> bytes/str/Path) and ``deletions`` (paths; a trailing '/' or a folder
    deletes recursively) on top of ``branch`` with ``git fast-import``; returns the new commit sha.
    The caller holds the repo lock. The working tree is synced to the new commit afterwards."""
    files = dict(files or {})
    old = git_resolve(repo, f"refs/heads/{branch}")
    if parent is not None and old != parent:
        raise ValueError(f"parent commit {parent} is not the head of {branch} ({old})")
    msg = message.encode()
    stream = bytearray()
    stream += f"commit refs/heads/{branch}\n".encode()
    stream += f"committer {FAKE_USER} <{FAKE_USER}@localhub.invalid> {int(time.time())} +0000\n".encode()
    stream += b"data %d\n" % len(msg) + msg + b"\n"
    if old:
        stream += f"from {old}\n".encode()
    for path in deletions:
        stream += b"D " + _fi_path(_check_repo_path(path.rstrip("/"))) + b"\n"
    for path, content in files.items():
        data = _as_bytes(content)
        stream += b"M 100644 inline " + _fi_path(_check_repo_path(path)) + b"\n"
        stream += b"data %d\n" % len(data) + data + b"\n"
    stream += b"done\n"
    _git(repo, "fast-import", "--quiet", "--done", "--force", input=bytes(stream))
    sha = git_resolve(repo, f"refs/heads/{branch}")
    assert sha is not None
    head = _git(repo, "symbolic-ref", "-q", "HEAD", check=False).decode().strip()
    if head == f"refs/heads/{branch}":
        _git(repo, "reset", "-q", "--hard", sha)
    return sha


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def refresh_olah_cache(cache_dir: str | Path, repo_type: str, repo_id: str, repo: str | Path) -> None:
    """Write olah's offline revision cache files for a mirror repo (see HUB_TESTING.md):
    ``revision/<ref>/resolved_commit.json`` (+ ``.body`` holding the sha) for each branch and tag, and
    exactly one ``revision/<head sha>/meta_head.json``."""
    base = Path(cache_dir) / "api" / REPO_TYPES[repo_type] / repo_id / "revision"
    now = time.time()
    refs = git_refs(repo)
    envelope = json.dumps({"status_code": 200, "headers": {}, "cached_at": now}).encode()
    for ref, sha in refs.items():
        d = base / ref
        _atomic_write(d / "resolved_commit.json.body", sha.encode())
        _atomic_write(d / "resolved_commit.json", envelope)
    for stale in base.rglob("resolved_commit.json"):  # deleted branches/tags
        if stale.parent.relative_to(base).as_posix() not in refs:
            stale.unlink(missing_ok=True)
            Path(str(stale) + ".body").unlink(missing_ok=True)
    head = refs.get(DEFAULT_BRANCH) or git_resolve(repo, "HEAD")
    for old in base.glob("*/meta_head.json"):
        if head is None or old.parent.name != head:
            old.unlink(missing_ok=True)
            Path(str(old) + ".body").unlink(missing_ok=True)
    if head is not None:
        date = _git(repo, "log", "-1", "--format=%cI", head).decode().strip()
        _atomic_write(base / head / "meta_head.json", json.dumps({"sha": head, "lastModified": date}).encode())


# --------------------------------------------------------------------------------------------------
# server side: the write extension mounted on olah's FastAPI app
# --------------------------------------------------------------------------------------------------


def _hub_error(status: int, code: str | None, message: str):
    from fastapi.responses import JSONResponse

    headers = {"x-error-message": message}
    if code:
        headers["x-error-code"] = code
    return JSONResponse(status_code=status, content={"error": message}, headers=headers)


def add_write_routes(app, mirrors_dir: str, cache_dir: str, lfs_mode: str = "auto") -> None:
    """Prepend the write routes and the error-fidelity middleware to olah's ``app``."""
    import yaml
    from fastapi import APIRouter, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse, Response

    router = APIRouter()
    settings = {"lfs": lfs_mode}

    def repo_dir(repo_type: str, repo_id: str) -> Path:
        return Path(mirrors_dir) / REPO_TYPES[repo_type] / repo_id

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def repo_url(request: Request, repo_type: str, repo_id: str) -> str:
        return f"{base_url(request)}/{URL_PREFIXES[repo_type]}{repo_id}"

    def _create(repo_type: str, repo_id: str) -> str | None:
        path = repo_dir(repo_type, repo_id)
        try:
            git_init(path)
        except FileExistsError:
            return None
        with _repo_lock(path):
            sha = git_commit(path, {".gitattributes": HUB_GITATTRIBUTES}, message="initial commit")
            refresh_olah_cache(cache_dir, repo_type, repo_id, path)
        return sha

    @router.get("/api/whoami-v2")
    async def whoami():
        return {
            "type": "user",
            "id": "0" * 24,
            "name": FAKE_USER,
            "fullname": "Test User",
            "email": f"{FAKE_USER}@localhub.invalid",
            "emailVerified": True,
            "isPro": False,
            "orgs": [{"type": "org", "name": FAKE_ORG, "fullname": "Test Org", "roleInOrg": "admin"}],
            "auth": {"type": "access_token", "accessToken": {"displayName": "localhub", "role": "write"}},
        }

    @router.post("/__localhub__/settings")
    async def change_settings(request: Request):
        body = await request.json()
        if body.get("lfs") not in (None, "never", "auto"):
            return _hub_error(400, None, "lfs must be 'never' or 'auto'")
        settings.update({k: v for k, v in body.items() if k in settings and v is not None})
        return settings

    @router.post("/api/repos/create")
    async def create_repo(request: Request):
        body = await request.json()
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            return _hub_error(400, None, f"Invalid repo type {repo_type!r}")
        name = body.get("name")
        org = body.get("organization") or FAKE_USER
        if not all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", x or "") and ".." not in x for x in (name, org)):
            return _hub_error(400, None, "Invalid repo name")
        repo_id = f"{org}/{name}"
        url = repo_url(request, repo_type, repo_id)
        sha = await run_in_threadpool(_create, repo_type, repo_id)
        if sha is None:
            return JSONResponse(
                status_code=409,
                content={"error": "You already created this repo", "url": url},
                headers={"x-error-message": "You already created this repo"},
            )
        return {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}

    @router.delete("/api/repos/delete")
    async def delete_repo(request: Request):
        body = await request.json()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or FAKE_USER}/{body.get('name')}"
        path = repo_dir(repo_type, repo_id)
        if repo_type not in REPO_TYPES or not path.exists():
            return _hub_error(404, "RepoNotFound", "Repository not found")
        shutil.rmtree(path)
        shutil.rmtree(Path(cache_dir) / "api" / REPO_TYPES[repo_type] / repo_id, ignore_errors=True)
        return Response(status_code=200)

    @router.post("/api/validate-yaml")
    async def validate_yaml(request: Request):
        body = await request.json()
        content = body.get("content") or ""
        m = re.match(r"\s*---\r?\n(.*?)\r?\n---", content, flags=re.S)
        if m:
            try:
                meta = yaml.safe_load(m.group(1))
            except yaml.YAMLError as e:
                return JSONResponse(status_code=400, content={"errors": [{"message": f"Invalid YAML: {e}"}]})
            if meta is not None and not isinstance(meta, dict):
                return JSONResponse(status_code=400, content={"errors": [{"message": "YAML must be a mapping"}]})
        return {"errors": [], "warnings": []}

    def _lookup(repo_types: str, org: str, name: str, rev: str) -> tuple[str | None, Path | None, object]:
        repo_type = PLURAL_TO_TYPE.get(repo_types)
        if repo_type is None:
            return None, None, _hub_error(404, "RepoNotFound", "Repository not found")
        path = repo_dir(repo_type, f"{org}/{name}")
        if not path.exists():
            return None, None, _hub_error(404, "RepoNotFound", "Repository not found")
        if git_resolve(path, f"refs/heads/{unquote(rev)}") is None:
            return None, None, _hub_error(404, "RevisionNotFound", f"Invalid rev id: {unquote(rev)}")
        return repo_type, path, None

    def _wants_lfs(path: str, size: int, sample: bytes) -> bool:
        if settings["lfs"] != "auto" or size == 0:
            return False
        name = path.rsplit("/", 1)[-1]
        return (
            size >= LFS_THRESHOLD
            or b"\0" in sample
            or any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(path, p) for p in LFS_PATTERNS)
        )

    @router.post("/api/{repo_types}/{org}/{name}/preupload/{rev:path}")
    async def preupload(repo_types: str, org: str, name: str, rev: str, request: Request):
        if request.query_params.get("create_pr"):
            return _hub_error(400, None, "LocalHub does not support pull requests")
        repo_type, path, err = _lookup(repo_types, org, name, rev)
        if err is not None:
            return err
        body = await request.json()
        files = body.get("files", [])
        oids = git_blob_oids(path, f"refs/heads/{unquote(rev)}", [f["path"] for f in files])
        out = []
        for f in files:
            sample = base64.b64decode(f.get("sample") or "")
            lfs = _wants_lfs(f["path"], int(f.get("size") or 0), sample)
            oid = oids.get(f["path"])
            if lfs and oid is not None:  # the Hub reports the sha256 of an LFS file
                pointer = git_cat(path, f"refs/heads/{unquote(rev)}", f["path"]) or b""
                m = _POINTER_RE.match(pointer)
                oid = m.group(1).decode() if m else None
            out.append(
                {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        return {"files": out, "commitOid": git_resolve(path, f"refs/heads/{unquote(rev)}")}

    async def lfs_batch(repo_type: str, org: str, name: str, request: Request):
        if not name.endswith(".git"):
            return _hub_error(404, "RepoNotFound", "Repository not found")
        repo_id = f"{org}/{name[:-4]}"
        path = repo_dir(repo_type, repo_id)
        if not path.exists():
            return _hub_error(404, "RepoNotFound", "Repository not found")
        body = await request.json()
        if body.get("operation") != "upload":
            return _hub_error(400, None, "LocalHub LFS batch supports uploads only")
        objects = []
        for obj in body.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            item = {"oid": oid, "size": size, "authenticated": True}
            if not _lfs_object_path(path, oid).exists():
                href = f"{base_url(request)}/__localhub__/lfs/{REPO_TYPES[repo_type]}/{repo_id}/{oid}"
                item["actions"] = {"upload": {"href": href, "header": {}, "expires_in": 3600}}
            objects.append(item)
        return JSONResponse(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, media_type="application/vnd.git-lfs+json"
        )

    @router.post("/{org}/{name}/info/lfs/objects/batch")
    async def lfs_batch_model(org: str, name: str, request: Request):
        return await lfs_batch("model", org, name, request)

    @router.post("/datasets/{org}/{name}/info/lfs/objects/batch")
    async def lfs_batch_dataset(org: str, name: str, request: Request):
        return await lfs_batch("dataset", org, name, request)

    @router.put("/__localhub__/lfs/{repo_types}/{org}/{name}/{oid}")
    async def lfs_put(repo_types: str, org: str, name: str, oid: str, request: Request):
        repo_type = PLURAL_TO_TYPE.get(repo_types)
        path = repo_dir(repo_type, f"{org}/{name}") if repo_type else None
        if path is None or not path.exists():
            return _hub_error(404, "RepoNotFound", "Repository not found")
        data = await request.body()
        if hashlib.sha256(data).hexdigest() != oid:
            return _hub_error(400, None, "sha256 mismatch")
        _atomic_write(_lfs_object_path(path, oid), data)
        return Response(status_code=200)

    def _commit(repo_type: str, path: Path, repo_id: str, rev: str, ops: list[dict]) -> dict:
        header: dict = {}
        files: dict[str, bytes] = {}
        deletions: list[str] = []
        with _repo_lock(path):
            head = git_resolve(path, f"refs/heads/{rev}")
            existing = set(git_list_files(path, head)) if head else set()
            for op in ops:
                key, value = op.get("key"), op.get("value") or {}
                if key == "header":
                    header = value
                elif key == "file":
                    content = value.get("content", "")
                    files[value["path"]] = (
                        base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
                    )
                elif key == "lfsFile":
                    obj = _lfs_object_path(path, value["oid"])
                    if not obj.exists():
                        return {
                            "status": 422,
                            "code": None,
                            "error": f"LFS object {value['oid']} for {value['path']} was not uploaded",
                        }
                    files[value["path"]] = LFS_POINTER.format(oid=value["oid"], size=obj.stat().st_size).encode()
                elif key == "deletedFile":
                    if value["path"] not in existing:
                        return {
                            "status": 404,
                            "code": "EntryNotFound",
                            "error": f"A file with this name doesn't exist: {value['path']}",
                        }
                    deletions.append(value["path"])
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/")
                    if not any(p.startswith(folder + "/") for p in existing):
                        return {
                            "status": 404,
                            "code": "EntryNotFound",
                            "error": f"A folder with this name doesn't exist: {folder}",
                        }
                    deletions.append(folder)
                else:
                    return {"status": 400, "code": None, "error": f"LocalHub: unsupported commit operation {key!r}"}
            parent = header.get("parentCommit")
            if parent and parent != head:
                return {
                    "status": 412,
                    "code": None,
                    "error": "A commit has happened since. Please refresh and try again.",
                }
            message = header.get("summary") or "Upload files"
            if header.get("description"):
                message += "\n\n" + header["description"]
            try:
                sha = git_commit(path, files, deletions, message=message, branch=rev)
            except ValueError as e:  # invalid path in repo
                return {"status": 400, "code": None, "error": str(e)}
            refresh_olah_cache(cache_dir, repo_type, repo_id, path)
        return {"sha": sha}

    @router.post("/api/{repo_types}/{org}/{name}/commit/{rev:path}")
    async def commit(repo_types: str, org: str, name: str, rev: str, request: Request):
        if request.query_params.get("create_pr"):
            return _hub_error(400, None, "LocalHub does not support pull requests")
        repo_type, path, err = _lookup(repo_types, org, name, rev)
        if err is not None:
            return err
        raw = await request.body()
        try:
            ops = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except ValueError as e:
            return _hub_error(400, None, f"Invalid NDJSON: {e}")
        repo_id = f"{org}/{name}"
        result = await run_in_threadpool(_commit, repo_type, path, repo_id, unquote(rev), ops)
        if "error" in result:
            return _hub_error(result["status"], result["code"], result["error"])
        sha = result["sha"]
        return {
            "success": True,
            "commitOid": sha,
            "pullRequestUrl": None,
            "commitUrl": f"{repo_url(request, repo_type, repo_id)}/commit/{sha}",
            "hookOutput": "",
        }

    @router.get("/api/{repo_types}/{org}/{name}/commits/{rev:path}")
    async def list_commits(repo_types: str, org: str, name: str, rev: str):
        repo_type = PLURAL_TO_TYPE.get(repo_types)
        path = repo_dir(repo_type, f"{org}/{name}") if repo_type else None
        if path is None or not path.exists():
            return _hub_error(401, "RepoNotFound", "Repository not found")
        sha = git_resolve(path, unquote(rev))
        if sha is None:
            return _hub_error(404, "RevisionNotFound", f"Invalid rev id: {unquote(rev)}")
        return await run_in_threadpool(git_log, path, sha)

    def _ref_route(kind: str, repo_types: str, org: str, name: str, ref: str, start: str | None, delete: bool):
        repo_type = PLURAL_TO_TYPE.get(repo_types)
        path = repo_dir(repo_type, f"{org}/{name}") if repo_type else None
        if path is None or not path.exists():
            return _hub_error(404, "RepoNotFound", "Repository not found")
        full = f"refs/{'heads' if kind == 'branch' else 'tags'}/{ref}"
        with _repo_lock(path):
            exists = git_resolve(path, full) is not None
            if delete:
                if not exists:
                    return _hub_error(404, "RevisionNotFound", f"Invalid rev id: {ref}")
                if full == f"refs/heads/{DEFAULT_BRANCH}":
                    return _hub_error(403, None, "Cannot delete the default branch")
                _git(path, "update-ref", "-d", full)
            else:
                if exists:
                    return _hub_error(409, None, f"{kind} {ref} already exists")
                target = git_resolve(path, start or DEFAULT_BRANCH)
                if target is None:
                    return _hub_error(404, "RevisionNotFound", f"Invalid rev id: {start}")
                if not ref or subprocess.run(["git", "check-ref-format", full], env=_git_env()).returncode != 0:
                    return _hub_error(400, None, f"Invalid {kind} name {ref!r}")
                _git(path, "update-ref", full, target)
            refresh_olah_cache(cache_dir, repo_type, f"{org}/{name}", path)
        return {}

    @router.post("/api/{repo_types}/{org}/{name}/branch/{branch:path}")
    async def create_branch(repo_types: str, org: str, name: str, branch: str, request: Request):
        body = await request.json() if await request.body() else {}
        return await run_in_threadpool(
            _ref_route, "branch", repo_types, org, name, unquote(branch), body.get("startingPoint"), False
        )

    @router.delete("/api/{repo_types}/{org}/{name}/branch/{branch:path}")
    async def delete_branch(repo_types: str, org: str, name: str, branch: str):
        return await run_in_threadpool(_ref_route, "branch", repo_types, org, name, unquote(branch), None, True)

    @router.post("/api/{repo_types}/{org}/{name}/tag/{rev:path}")
    async def create_tag(repo_types: str, org: str, name: str, rev: str, request: Request):
        body = await request.json()
        return await run_in_threadpool(
            _ref_route, "tag", repo_types, org, name, body.get("tag", ""), unquote(rev), False
        )

    @router.delete("/api/{repo_types}/{org}/{name}/tag/{tag:path}")
    async def delete_tag(repo_types: str, org: str, name: str, tag: str):
        return await run_in_threadpool(_ref_route, "tag", repo_types, org, name, unquote(tag), None, True)

    # Prepend our routes so they win over olah's generic ones (e.g. its upstream-proxying whoami).
    n = len(app.router.routes)
    app.include_router(router)
    ours = app.router.routes[n:]
    del app.router.routes[n:]
    app.router.routes[0:0] = ours

    resolve_re = re.compile(r"^/(?:(models|datasets|spaces)/)?([^/]+)/([^/]+)/resolve/([^/]+)/(.+)$")
    api_re = re.compile(r"^/api/(models|datasets|spaces)/([^/]+)/([^/]+)/(revision|tree|paths-info)/([^/]+)(?:/(.*))?$")

    @app.middleware("http")
    async def hub_like_errors(request: Request, call_next):
        target = None  # (plural, org, name, rev, file path or None)
        raw = request.scope.get("raw_path") or request.url.path.encode()
        raw_path = raw.decode("latin-1").split("?", 1)[0]
        if request.method in ("GET", "HEAD"):
            m = resolve_re.match(raw_path)
            if m:
                plural, org, name, rev, file_path = m.groups()
                target = (plural or "models", org, name, rev, file_path)
        if target is None and request.method in ("GET", "HEAD", "POST"):
            m = api_re.match(raw_path)
            if m and (request.method != "POST" or m.group(4) == "paths-info"):
                plural, org, name, _, rev, _ = m.groups()
                target = (plural, org, name, rev, None)
        if target is not None and target[1] not in ("api", "__localhub__"):
            plural, org, name, rev, file_path = target
            path = Path(mirrors_dir) / plural / unquote(org) / unquote(name)
            if path.exists():
                rev = unquote(rev)
                sha = await run_in_threadpool(git_resolve, path, rev)
                if sha is None:
                    return _hub_error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                if file_path is not None:
                    fp = unquote(file_path)
                    if not await run_in_threadpool(git_exists, path, sha, fp):
                        return _hub_error(404, "EntryNotFound", f'{fp} does not exist on "{rev}"')
        return await call_next(request)


def _serve(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="LocalHub launcher: olah + test-only write routes")
    parser.add_argument("--config", required=True)
    parser.add_argument("--log-dir", required=True)
    parser.add_argument("--lfs", default="auto", choices=["never", "auto"])
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)

    if args.parent_pid:  # exit when the test process dies without stopping us (e.g. SIGKILL)
        import threading

        def _watch_parent() -> None:
            while True:
                time.sleep(0.5)
                if os.getppid() != args.parent_pid:
                    os._exit(0)

        threading.Thread(target=_watch_parent, daemon=True).start()

    # olah.server builds its settings from these at import (its multi-worker code path).
    os.environ["OLAH_CONFIG"] = args.config
    os.environ["OLAH_LOG_PATH"] = args.log_dir
    import uvicorn
    from olah.server import app

    config = app.state.app_settings.config
    add_write_routes(app, mirrors_dir=config.mirrors_path[0], cache_dir=config.repos_path, lfs_mode=args.lfs)
    uvicorn.run(app, host=config.host, port=int(config.port), log_level="warning", access_log=False)


# --------------------------------------------------------------------------------------------------
# test side: LocalHub
# --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalHub:
    """A Hub on ``http://127.0.0.1:<port>`` backed by temporary git mirrors (see module docstring).

    ``LocalHub(port)`` then ``start()`` (or use it as a context manager); ``stop()`` is idempotent and
    also registered with ``atexit``. Clients only use it if ``HF_ENDPOINT`` equals ``hub.url`` when
    they are imported, so pick the port first (``free_port()``), export the endpoint, then start.
    """

    def __init__(
        self,
        port: int | None = None,
        root: str | Path | None = None,
        lfs: str = "auto",
        startup_timeout: float = 30.0,
        keep_files: bool = False,
    ):
        if lfs not in ("never", "auto"):
            raise ValueError("lfs must be 'never' or 'auto'")
        self.port = port or free_port()
        self._own_root = root is None
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="lmke_localhub_"))
        self.mirrors_dir = self.root / "mirrors"
        self.cache_dir = self.root / "olah-cache"
        self.log_dir = self.root / "logs"
        self.config_path = self.root / "olah.toml"
        self.lfs = lfs
        self.startup_timeout = startup_timeout
        self.keep_files = keep_files
        self.start_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_config(self) -> None:
        for d in (
            self.mirrors_dir / "models",
            self.mirrors_dir / "datasets",
            self.mirrors_dir / "spaces",
            self.cache_dir,
            self.log_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)
        netloc = f"127.0.0.1:{self.port}"
        self.config_path.write_text(
            "[basic]\n"
            f'host = "127.0.0.1"\nport = {self.port}\n'
            f"repos-path = {json.dumps(str(self.cache_dir))}\n"
            f"mirrors-path = [{json.dumps(str(self.mirrors_dir))}]\n"
            'mirror-scheme = "http"\n'
            f'mirror-netloc = "{netloc}"\nmirror-lfs-netloc = "{netloc}"\n'
            # Upstream points at a closed local port: a second guard against reaching the real Hub.
            'hf-scheme = "http"\nhf-netloc = "127.0.0.1:9"\nhf-lfs-netloc = "127.0.0.1:9"\n'
            "[accessibility]\noffline = true\n"
        )

    def start(self) -> "LocalHub":
        if self.running:
            return self
        t0 = time.monotonic()
        self._write_config()
        self._log_file = open(self.log_dir / "server.log", "ab")
        env = dict(os.environ)
        env.pop("HF_ENDPOINT", None)
        env["PYTHONUNBUFFERED"] = "1"
        self._proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "serve",
                "--config",
                str(self.config_path),
                "--log-dir",
                str(self.log_dir),
                "--lfs",
                self.lfs,
                "--parent-pid",
                str(os.getpid()),
            ],
            cwd=str(self.root),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        atexit.register(self.stop)
        deadline = t0 + self.startup_timeout
        probe = f"{self.url}/api/whoami-v2"
        while True:
            if self._proc.poll() is not None:
                log = self.server_log()
                self.stop()
                raise RuntimeError(f"LocalHub server exited with {self._proc.returncode}:\n{log[-4000:]}")
            try:
                with urllib.request.urlopen(probe, timeout=2) as r:
                    if r.status == 200 and json.load(r).get("name") == FAKE_USER:
                        break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                log = self.server_log()
                self.stop()
                raise TimeoutError(f"LocalHub did not answer {probe} within {self.startup_timeout}s:\n{log[-4000:]}")
            time.sleep(0.05)
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_root and not self.keep_files and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def server_log(self) -> str:
        p = self.log_dir / "server.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # -- repositories ----------------------------------------------------------------------------
    def repo_path(self, repo_id: str, repo_type: str = "model") -> Path:
        if repo_type not in REPO_TYPES:
            raise ValueError(f"repo_type must be one of {list(REPO_TYPES)}")
        if repo_id.count("/") != 1:
            raise ValueError(f"repo_id must be 'org/name', got {repo_id!r}")
        return self.mirrors_dir / REPO_TYPES[repo_type] / repo_id

    def create_repo(
        self,
        repo_id: str,
        files: Mapping[str, FileContent] | None = None,
        repo_type: str = "model",
        message: str = "initial commit",
    ) -> str:
        """Create ``repo_id`` with one commit holding exactly ``files`` (path -> bytes, str or a local
        Path; without files: the Hub's default ``.gitattributes``). Returns the commit sha."""
        path = self.repo_path(repo_id, repo_type)
        git_init(path)
        with _repo_lock(path):
            sha = git_commit(path, files or {".gitattributes": HUB_GITATTRIBUTES}, message=message)
            refresh_olah_cache(self.cache_dir, repo_type, repo_id, path)
        return sha

    def create_model_repo(self, repo_id: str, files: Mapping[str, FileContent] | None = None, **kw) -> str:
        return self.create_repo(repo_id, files, repo_type="model", **kw)

    def create_dataset_repo(self, repo_id: str, files: Mapping[str, FileContent] | None = None, **kw) -> str:
        return self.create_repo(repo_id, files, repo_type="dataset", **kw)

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, FileContent] | None = None,
        deletions: Iterable[str] = (),
        repo_type: str = "model",
        message: str = "update",
        branch: str = DEFAULT_BRANCH,
    ) -> str:
        """Commit files/deletions directly into the mirror (no HTTP). Returns the commit sha."""
        path = self.repo_path(repo_id, repo_type)
        with _repo_lock(path):
            sha = git_commit(path, files, deletions, message=message, branch=branch)
            refresh_olah_cache(self.cache_dir, repo_type, repo_id, path)
        return sha

    def create_tag(self, repo_id: str, tag: str, repo_type: str = "model", revision: str = DEFAULT_BRANCH) -> str:
        path = self.repo_path(repo_id, repo_type)
        with _repo_lock(path):
            _git(path, "tag", tag, revision)
            refresh_olah_cache(self.cache_dir, repo_type, repo_id, path)
        return git_resolve(path, tag)  # type: ignore[return-value]

    def set_lfs(self, mode: str) -> None:
        """Switch the running server's upload mode: "never" (all files regular) or "auto"."""
        req = urllib.request.Request(
            f"{self.url}/__localhub__/settings",
            method="POST",
            data=json.dumps({"lfs": mode}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            self.lfs = json.load(r)["lfs"]

    @contextlib.contextmanager
    def lfs_mode(self, mode: str):
        """``with hub.lfs_mode("never"):`` switches the upload mode for the block only."""
        previous = self.lfs
        self.set_lfs(mode)
        try:
            yield self
        finally:
            self.set_lfs(previous)

    def list_files(self, repo_id: str, repo_type: str = "model", revision: str = DEFAULT_BRANCH) -> list[str]:
        """Sorted file paths in the git mirror at ``revision``."""
        return git_list_files(self.repo_path(repo_id, repo_type), revision)

    def read_file(
        self, repo_id: str, path: str, repo_type: str = "model", revision: str = DEFAULT_BRANCH
    ) -> bytes | None:
        """A file's bytes in the git mirror (LFS pointers resolved), or None if absent."""
        return git_read_file(self.repo_path(repo_id, repo_type), revision, path)

    def is_lfs_pointer(self, repo_id: str, path: str, repo_type: str = "model", revision: str = DEFAULT_BRANCH) -> bool:
        data = git_cat(self.repo_path(repo_id, repo_type), revision, path)
        return data is not None and _POINTER_RE.match(data) is not None

    def head(self, repo_id: str, repo_type: str = "model", revision: str = DEFAULT_BRANCH) -> str | None:
        return git_resolve(self.repo_path(repo_id, repo_type), revision)

    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        return self.repo_path(repo_id, repo_type).exists()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        _serve(sys.argv[2:])
    else:
        sys.exit("usage: python hub_server.py serve --config FILE --log-dir DIR [--lfs never|auto]")
