"""A minimal Hugging Face Hub on 127.0.0.1 for offline tests: standard library HTTP server, in-memory storage.

It implements just the routes that huggingface_hub 2.4 and transformers 5.23 call to create a model repo, commit files
as regular (non-LFS) uploads, validate a model card and download files:

    POST   /api/repos/create                            409 (with the repo url) if the repo exists
    DELETE /api/repos/delete
    GET    /api/models/{ns}/{name}[/revision/{rev}]     repo info: sha, siblings, private
    GET    /api/models/{ns}/{name}/tree/{rev}[/{path}]  one page, no pagination (sharded downloads list the tree)
    POST   /api/models/{ns}/{name}/preupload/{rev}      `uploadMode: "regular"` for every file
    POST   /api/models/{ns}/{name}/commit/{rev}         NDJSON: a header line, then `file`/`deletedFile` lines
    POST   /api/models/{ns}/{name}/branch/{branch}      409 if the branch exists
    DELETE /api/models/{ns}/{name}/branch/{branch}
    POST   /api/validate-yaml                           parses the README front matter with PyYAML
    HEAD   /{ns}/{name}/resolve/{rev}/{path}            ETag, X-Repo-Commit, Content-Length
    GET    /{ns}/{name}/resolve/{rev}/{path}

A missing repo, revision or file answers 404 with the `X-Error-Code` the real Hub sends (`RepoNotFound`,
`RevisionNotFound`, `EntryNotFound`), so the client raises the matching error and transformers treats missing optional
files as absent; any other route answers 404. Writes need `Authorization: Bearer {token}`, and a wrong token is a 401
on every route. Request bodies are capped at `MAX_BODY_BYTES`; every request is recorded in `HubServer.requests`.
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import SplitResult, unquote, urlsplit

import yaml


MAX_BODY_BYTES = 512 * 2**20
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
PIPELINE_TAGS = {"image-text-to-text", "text-generation", "video-text-to-text", "visual-question-answering"}

Answer = tuple[HTTPStatus, dict | list]


def git_blob_sha(content: bytes) -> str:
    """The git object id of a file: what the Hub sends as the ETag of a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[Commit] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)

    def commit(self, revision: str) -> Commit | None:
        """The commit a branch name or commit id points at."""
        oid = self.branches.get(revision, revision)
        return next((commit for commit in self.commits if commit.oid == oid), None)


class HubError(Exception):
    """An error answer: HTTP status, message, optional `X-Error-Code` header and extra JSON fields."""

    def __init__(self, status: HTTPStatus, message: str, code: str | None = None, **payload):
        super().__init__(message)
        self.status, self.code, self.payload = status, code, payload


class HubServer:
    """An in-memory Hub served from a background thread; use it as a context manager (or `start` and `stop`).

    Set `fail_commits` to answer every commit with a 500 (to test clean-up after a failed push).
    """

    def __init__(self, token: str = "hf_test_token"):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_commits = False
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        handler = type("Handler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="test-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)
            self._httpd = self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files of a repo at a revision."""
        return self._commit(repo_id, revision).files

    def _repo(self, repo_id: str, authorized: bool = True) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubError(HTTPStatus.NOT_FOUND, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit(self, repo_id: str, revision: str, authorized: bool = True) -> Commit:
        commit = self._repo(repo_id, authorized).commit(revision)
        if commit is None:
            raise HubError(HTTPStatus.NOT_FOUND, f"Revision {revision} not found", "RevisionNotFound")
        return commit

    def _add_commit(self, repo: Repo, branch: str, message: str, files: dict[str, bytes]) -> Commit:
        digest = hashlib.sha1(f"{repo.repo_id}:{len(repo.commits)}:{message}".encode())
        for path, content in sorted(files.items()):
            digest.update(path.encode() + git_blob_sha(content).encode())
        commit = Commit(digest.hexdigest(), message, files)
        repo.commits.append(commit)
        repo.branches[branch] = commit.oid
        return commit

    # Routes: each returns (status, JSON payload) or raises HubError.

    def create_repo(self, body: dict) -> Answer:
        if body.get("type", "model") != "model":
            raise HubError(HTTPStatus.BAD_REQUEST, "this test Hub only hosts model repos")
        repo_id = f"{body.get('organization')}/{body['name']}"
        if not REPO_ID.match(repo_id):
            raise HubError(HTTPStatus.BAD_REQUEST, f"invalid repo id {repo_id!r}: use namespace/name")
        if repo_id in self.repos:
            raise HubError(HTTPStatus.CONFLICT, "You already created this model repo", url=f"{self.url}/{repo_id}")
        repo = Repo(repo_id, private=body.get("visibility") == "private")
        gitattributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        self._add_commit(repo, "main", "initial commit", {".gitattributes": gitattributes})
        self.repos[repo_id] = repo
        return HTTPStatus.OK, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}

    def delete_repo(self, body: dict) -> Answer:
        repo_id = f"{body.get('organization')}/{body['name']}"
        self._repo(repo_id)
        del self.repos[repo_id]
        return HTTPStatus.OK, {}

    def repo_info(self, repo_id: str, revision: str, authorized: bool) -> Answer:
        repo = self._repo(repo_id, authorized)
        commit = self._commit(repo_id, revision, authorized)
        siblings = [{"rfilename": path, "size": len(content)} for path, content in sorted(commit.files.items())]
        info = {"id": repo_id, "modelId": repo_id, "sha": commit.oid, "private": repo.private, "tags": []}
        return HTTPStatus.OK, {**info, "siblings": siblings}

    def tree(self, repo_id: str, revision: str, folder: str, recursive: bool, authorized: bool) -> Answer:
        files = self._commit(repo_id, revision, authorized).files
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        entries: dict[str, dict] = {}
        for path, content in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                name = prefix + "/".join(parts[:depth])
                entries.setdefault(
                    name, {"type": "directory", "oid": git_blob_sha(name.encode()), "size": 0, "path": name}
                )
            if len(parts) == 1 or recursive:
                entries[path] = {"type": "file", "oid": git_blob_sha(content), "size": len(content), "path": path}
        if prefix and not entries:
            raise HubError(HTTPStatus.NOT_FOUND, f"{folder} does not exist on {revision}", "EntryNotFound")
        return HTTPStatus.OK, list(entries.values())

    def preupload(self, repo_id: str, revision: str, body: dict) -> Answer:
        commit = self._commit(repo_id, revision)
        modes = [
            {"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
            for item in body["files"]
        ]
        return HTTPStatus.OK, {"files": modes, "commitOid": commit.oid}

    def create_commit(self, repo_id: str, revision: str, ndjson: bytes) -> Answer:
        repo, parent = self._repo(repo_id), self._commit(repo_id, revision)
        if self.fail_commits:
            raise HubError(HTTPStatus.INTERNAL_SERVER_ERROR, "commits are switched off on this test Hub")
        lines = [json.loads(line) for line in ndjson.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(HTTPStatus.BAD_REQUEST, "the commit payload must start with a header line")
        header = lines[0]["value"]
        if header.get("parentCommit") not in (None, parent.oid):
            raise HubError(HTTPStatus.PRECONDITION_FAILED, "the parent commit is not the head of the branch")
        files = dict(parent.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file" and value.get("encoding") == "base64":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile" and value["path"] in files:
                del files[value["path"]]
            else:
                raise HubError(HTTPStatus.BAD_REQUEST, f"unsupported commit operation {key!r} on {value.get('path')}")
        commit = self._add_commit(repo, revision, header["summary"], files)
        url = f"{self.url}/{repo_id}/commit/{commit.oid}"
        return HTTPStatus.OK, {"success": True, "commitOid": commit.oid, "commitUrl": url, "pullRequestUrl": None}

    def create_branch(self, repo_id: str, branch: str, body: dict) -> Answer:
        repo = self._repo(repo_id)
        if branch in repo.branches:
            raise HubError(HTTPStatus.CONFLICT, f"Branch {branch} already exists")
        repo.branches[branch] = self._commit(repo_id, body.get("startingPoint") or "main").oid
        return HTTPStatus.OK, {}

    def delete_branch(self, repo_id: str, branch: str) -> Answer:
        repo = self._repo(repo_id)
        if branch == "main":
            raise HubError(HTTPStatus.BAD_REQUEST, "the main branch cannot be deleted")
        if repo.branches.pop(branch, None) is None:
            raise HubError(HTTPStatus.NOT_FOUND, f"Revision {branch} not found", "RevisionNotFound")
        return HTTPStatus.OK, {}

    @staticmethod
    def validate_yaml(body: dict) -> Answer:
        """Errors for a README whose front matter is not YAML or has malformed model metadata."""
        match = re.match(r"^---\r?\n(.*?)\r?\n---\r?\n", body.get("content", ""), re.DOTALL)
        if match is None:
            return HTTPStatus.OK, {"errors": [], "warnings": [{"message": "Empty or missing yaml metadata"}]}
        try:
            metadata = yaml.safe_load(match.group(1))
        except yaml.YAMLError as error:
            return HTTPStatus.BAD_REQUEST, {"errors": [{"message": f"invalid YAML: {error}"}]}
        if not isinstance(metadata, dict):
            return HTTPStatus.BAD_REQUEST, {"errors": [{"message": "the metadata must be a YAML mapping"}]}
        errors = [
            f'"{key}" must be a string'
            for key in ("license", "library_name")
            if not isinstance(metadata.get(key, ""), str)
        ]
        if "pipeline_tag" in metadata and metadata["pipeline_tag"] not in PIPELINE_TAGS:
            errors.append(f'"pipeline_tag" {metadata["pipeline_tag"]!r} is not a known pipeline tag')
        tags = metadata.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            errors.append('"tags" must be a list of strings')
        base = metadata.get("base_model", [])
        if not all(isinstance(b, str) and REPO_ID.match(b) for b in (base if isinstance(base, list) else [base])):
            errors.append(f'"base_model" must be a repo id or a list of repo ids, got {base!r}')
        if errors:
            return HTTPStatus.BAD_REQUEST, {"errors": [{"message": message} for message in errors]}
        return HTTPStatus.OK, {"errors": [], "warnings": []}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args) -> None:
        """Requests are recorded in `HubServer.requests` instead of printed."""

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        self.hub.requests.append((self.command, url.path))
        try:
            body = self._read_body()
            with self.hub._lock:
                status, headers, payload = self._route(url, body)
        except HubError as error:
            headers = {"Content-Type": "application/json", "X-Error-Message": str(error)}
            if error.code:
                headers["X-Error-Code"] = error.code
            status, payload = error.status, json.dumps({"error": str(error), **error.payload}).encode()
        except (KeyError, TypeError, ValueError) as error:
            status, headers = HTTPStatus.BAD_REQUEST, {"Content-Type": "application/json"}
            payload = json.dumps({"error": f"malformed request: {error!r}"}).encode()
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(payload))}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise HubError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length) if length else b""

    def _route(self, url: SplitResult, body: bytes) -> tuple[HTTPStatus, dict[str, str], bytes]:
        hub, method = self.hub, self.command
        parts = [unquote(part) for part in url.path.strip("/").split("/")]
        credentials = self.headers.get("Authorization")
        if credentials is not None and credentials != f"Bearer {hub.token}":
            raise HubError(HTTPStatus.UNAUTHORIZED, "Invalid credentials in Authorization header")
        authorized = credentials is not None
        if parts[0] == "api" and method in ("POST", "DELETE") and not authorized and parts != ["api", "validate-yaml"]:
            raise HubError(HTTPStatus.UNAUTHORIZED, "this route needs a token")

        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), authorized)
        answer = None
        if method == "POST" and parts == ["api", "repos", "create"]:
            answer = hub.create_repo(json.loads(body))
        elif method == "DELETE" and parts == ["api", "repos", "delete"]:
            answer = hub.delete_repo(json.loads(body))
        elif method == "POST" and parts == ["api", "validate-yaml"]:
            answer = hub.validate_yaml(json.loads(body))
        elif parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, action, rest = "/".join(parts[2:4]), parts[4] if len(parts) > 4 else None, parts[5:]
            if method == "GET" and action is None:
                answer = hub.repo_info(repo_id, "main", authorized)
            elif method == "GET" and action == "revision" and len(rest) == 1:
                answer = hub.repo_info(repo_id, rest[0], authorized)
            elif method == "GET" and action == "tree" and rest:
                recursive = re.search(r"(^|&)recursive=(true|1)", url.query, re.IGNORECASE) is not None
                answer = hub.tree(repo_id, rest[0], "/".join(rest[1:]), recursive, authorized)
            elif method == "POST" and action == "preupload" and len(rest) == 1:
                answer = hub.preupload(repo_id, rest[0], json.loads(body))
            elif method == "POST" and action == "commit" and len(rest) == 1:
                answer = hub.create_commit(repo_id, rest[0], body)
            elif method == "POST" and action == "branch" and len(rest) == 1:
                answer = hub.create_branch(repo_id, rest[0], json.loads(body or b"{}"))
            elif method == "DELETE" and action == "branch" and len(rest) == 1:
                answer = hub.delete_branch(repo_id, rest[0])
        if answer is None:
            raise HubError(HTTPStatus.NOT_FOUND, f"no route for {method} {url.path} on this test Hub")
        status, payload = answer
        return status, {"Content-Type": "application/json"}, json.dumps(payload).encode()

    def _resolve(
        self, repo_id: str, revision: str, path: str, authorized: bool
    ) -> tuple[HTTPStatus, dict[str, str], bytes]:
        commit = self.hub._commit(repo_id, revision, authorized)
        if path not in commit.files:
            raise HubError(HTTPStatus.NOT_FOUND, f"{path} does not exist on {revision}", "EntryNotFound")
        content = commit.files[path]
        headers = {
            "ETag": f'"{git_blob_sha(content)}"',
            "X-Repo-Commit": commit.oid,
            "Content-Type": "application/octet-stream",
        }
        return HTTPStatus.OK, headers, content
