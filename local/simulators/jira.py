"""Jira Cloud (Jira Service Management) REST API v3: issues, comments in Atlassian Document Format, and
workflow transitions.

- ``GET /rest/api/3/issue/{key}``: the issue with ``fields`` (``fields=a,b`` narrows them).
- ``GET|POST /rest/api/3/issue/{key}/comment``: a comment body must be an ADF document
  (``{"type": "doc", "version": 1, "content": [...]}`` with known node types); a plain string, as v2 took,
  is refused with Jira's own message. Stored as sent.
- ``GET|POST /rest/api/3/issue/{key}/transitions``: Jira changes status only through transitions. Each seeded
  issue gets a workflow (by default every status the policy names, with transitions named after their target
  status, all global); ``POST`` with an unknown transition id is answered 400; success is 204.

Authentication is Basic with an account email and an API token (shape checked, values accepted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import count
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .common import (
    JSON,
    ConflictError,
    SeedError,
    Service,
    ServiceError,
    read_json_body,
    reject_unknown_keys,
    require_str,
    service_base_url,
    utc_now,
)
from .servicenow import basic_auth_user

PREFIX = "/jira"

# The default workflow: the usual statuses plus every ticket state the policy's transitions name
# (policy/policy.toml, [itsm.jira.transitions]), each reachable from anywhere by a transition of its name.
DEFAULT_WORKFLOW: tuple[tuple[str, str], ...] = (
    ("Open", "new"),
    ("In Progress", "indeterminate"),
    ("Access pending (approval)", "indeterminate"),
    ("Access pending (validated)", "indeterminate"),
    ("Work in progress", "indeterminate"),
    ("Access rejected", "indeterminate"),
    ("Access denied", "indeterminate"),
    ("Access expired", "indeterminate"),
    ("Access escalated", "indeterminate"),
    ("Access revoked", "indeterminate"),
    ("Access cancelled", "indeterminate"),
    ("Resolved", "done"),
    ("Closed", "done"),
)
STATUS_CATEGORIES = {
    "new": {"id": 2, "key": "new", "colorName": "blue-gray", "name": "To Do"},
    "indeterminate": {"id": 4, "key": "indeterminate", "colorName": "yellow", "name": "In Progress"},
    "done": {"id": 3, "key": "done", "colorName": "green", "name": "Done"},
}
_ISSUE_EXPAND = "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations"
PRIORITIES = {"Highest": "1", "High": "2", "Medium": "3", "Low": "4", "Lowest": "5"}

# ADF node types (https://developer.atlassian.com/cloud/jira/platform/apis/document/structure/).
ADF_BLOCK_NODES = {
    "blockquote",
    "bulletList",
    "codeBlock",
    "expand",
    "heading",
    "mediaGroup",
    "mediaSingle",
    "orderedList",
    "panel",
    "paragraph",
    "rule",
    "table",
    "multiBodiedExtension",
}
ADF_CHILD_NODES = {
    "listItem",
    "media",
    "nestedExpand",
    "tableCell",
    "tableHeader",
    "tableRow",
    "date",
    "emoji",
    "hardBreak",
    "inlineCard",
    "mention",
    "status",
    "text",
    "mediaInline",
}
ADF_MARKS = {
    "backgroundColor",
    "code",
    "em",
    "link",
    "strike",
    "strong",
    "subsup",
    "textColor",
    "underline",
    "border",
}
ADF_ERROR = "Operation value must be an Atlassian Document (see the Atlassian Document Format)"

ISSUE_SEED_KEYS = (
    "key",
    "id",
    "summary",
    "description",
    "status",
    "priority",
    "issuetype",
    "assignee",
    "reporter",
    "labels",
    "fields",
    "workflow",
)


def jira_time(moment: datetime) -> str:
    """``2024-05-01T10:00:00.000+0000``: how Jira prints date-times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def validate_adf(doc: object) -> str | None:
    """Why ``doc`` is not an ADF document, or None when it is one."""
    if not isinstance(doc, dict) or doc.get("type") != "doc" or doc.get("version") != 1:
        return 'the top level must be {"type": "doc", "version": 1, "content": [...]}'
    content = doc.get("content")
    if not isinstance(content, list):
        return "doc.content must be an array"
    for index, node in enumerate(content):
        problem = _validate_node(node, f"content[{index}]", top_level=True)
        if problem:
            return problem
    return None


def _validate_node(node: object, where: str, top_level: bool) -> str | None:
    if not isinstance(node, dict) or not isinstance(node.get("type"), str):
        return f"{where} must be an object with a string 'type'"
    kind = node["type"]
    if kind not in ADF_BLOCK_NODES and kind not in ADF_CHILD_NODES:
        return f"{where}: unknown node type {kind!r}"
    if top_level and kind not in ADF_BLOCK_NODES:
        return f"{where}: {kind!r} cannot appear at the top level of a document"
    if kind == "text":
        if not isinstance(node.get("text"), str) or not node["text"]:
            return f"{where}: a text node needs a non-empty 'text'"
        marks = node.get("marks", [])
        if not isinstance(marks, list):
            return f"{where}.marks must be an array"
        for m_index, mark in enumerate(marks):
            if not isinstance(mark, dict) or mark.get("type") not in ADF_MARKS:
                return f"{where}.marks[{m_index}]: unknown mark"
    children = node.get("content")
    if children is not None:
        if not isinstance(children, list):
            return f"{where}.content must be an array"
        for index, child in enumerate(children):
            problem = _validate_node(child, f"{where}.content[{index}]", top_level=False)
            if problem:
                return problem
    return None


def adf_text(doc: Mapping[str, Any]) -> str:
    """The plain text of an ADF document (paragraphs joined by newlines), for tests and the state view."""
    parts: list[str] = []

    def walk(node: Mapping[str, Any]) -> None:
        if node.get("type") == "text":
            parts.append(str(node.get("text", "")))
        elif node.get("type") == "hardBreak":
            parts.append("\n")
        for child in node.get("content", []) or []:
            if isinstance(child, dict):
                walk(child)
        if node.get("type") in ADF_BLOCK_NODES | {"listItem"}:
            parts.append("\n")

    walk(doc)
    return "".join(parts).strip()


class JiraService(Service):
    name = "jira"
    prefix = PREFIX

    def __init__(self) -> None:
        self.issues: dict[str, JSON] = {}
        self.users: dict[str, JSON] = {}
        self._issue_ids = count(10001)
        self._comment_ids = count(10001)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def snapshot(self, base_url: str) -> JSON:
        return {"issues": [self.issue_view(key) for key in self.issues], "users": list(self.users.values())}

    # ---------------------------------------------------------------- pipeline hooks

    def authenticate(self, request: Request) -> tuple[bool, str | None]:
        user = basic_auth_user(request)
        return user is not None, user

    def unauthenticated(self) -> ServiceError:
        return ServiceError(401, "Client must be authenticated to access this resource.")

    def error_response(self, request: Request, error: ServiceError) -> Response:
        # Jira puts field-level problems in "errors" (by field) and the rest in "errorMessages".
        body: JSON = {"errorMessages": [error.message], "errors": {}}
        if error.code and error.detail:
            body = {
                "errorMessages": [],
                "errors": {error.code: error.detail},
                "simulatorDetail": error.message,
            }
        return JSONResponse(body, status_code=error.status, headers=error.headers)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/rest/api/3/issue/{key}", self.get_issue, methods=["GET"]),
            Route("/rest/api/3/issue/{key}/comment", self.list_comments, methods=["GET"]),
            Route("/rest/api/3/issue/{key}/comment", self.add_comment, methods=["POST"]),
            Route("/rest/api/3/issue/{key}/transitions", self.list_transitions, methods=["GET"]),
            Route("/rest/api/3/issue/{key}/transitions", self.do_transition, methods=["POST"]),
        ]

    # ---------------------------------------------------------------- REST

    def _issue(self, key_or_id: str) -> JSON:
        issue = self.issues.get(key_or_id.upper()) or next(
            (i for i in self.issues.values() if i["id"] == key_or_id), None
        )
        if issue is None:
            raise ServiceError(404, "Issue does not exist or you do not have permission to see it.")
        return issue

    async def get_issue(self, request: Request) -> Response:
        issue = self._issue(request.path_params["key"])
        base = service_base_url(request)
        fields = self._render_fields(base, issue)
        wanted = request.query_params.get("fields")
        if wanted and wanted not in ("*all", "*navigable"):
            names = {f.strip() for f in wanted.split(",") if f.strip()}
            fields = {k: v for k, v in fields.items() if k in names}
        return JSONResponse(
            {
                "expand": _ISSUE_EXPAND,
                "id": issue["id"],
                "self": f"{base}/rest/api/3/issue/{issue['id']}",
                "key": issue["key"],
                "fields": fields,
            }
        )

    async def list_comments(self, request: Request) -> Response:
        issue = self._issue(request.path_params["key"])
        base = service_base_url(request)
        comments = [self._render_comment(base, issue, c) for c in issue["comments"]]
        return JSONResponse({"startAt": 0, "maxResults": 5000, "total": len(comments), "comments": comments})

    async def add_comment(self, request: Request) -> Response:
        issue = self._issue(request.path_params["key"])
        body = await read_json_body(request)
        if not isinstance(body, dict):
            raise ServiceError(400, "The request body must be a JSON object.")
        author = self.user_for(basic_auth_user(request) or "unknown@example.com")
        comment = self._new_comment(issue, body.get("body"), author, body.get("visibility"))
        return JSONResponse(self._render_comment(service_base_url(request), issue, comment), status_code=201)

    def _new_comment(self, issue: JSON, adf: object, author: JSON, visibility: object = None) -> JSON:
        problem = validate_adf(adf)
        if problem is not None:
            raise ServiceError(400, problem, code="comment", detail=ADF_ERROR)
        assert isinstance(adf, dict)
        now = jira_time(utc_now())
        comment = {
            "id": str(next(self._comment_ids)),
            "author": author["accountId"],
            "body": adf,
            "created": now,
            "updated": now,
            "visibility": visibility,
        }
        issue["comments"].append(comment)
        return comment

    async def list_transitions(self, request: Request) -> Response:
        issue = self._issue(request.path_params["key"])
        base = service_base_url(request)
        transitions = [
            {
                "id": t["id"],
                "name": t["name"],
                "to": self._render_status(base, issue, t["to"]),
                "hasScreen": False,
                "isGlobal": True,
                "isInitial": False,
                "isAvailable": True,
                "isConditional": False,
                "isLooped": False,
            }
            for t in issue["workflow"]["transitions"]
        ]
        return JSONResponse({"expand": "transitions", "transitions": transitions})

    async def do_transition(self, request: Request) -> Response:
        issue = self._issue(request.path_params["key"])
        body = await read_json_body(request)
        transition = body.get("transition") if isinstance(body, dict) else None
        transition_id = transition.get("id") if isinstance(transition, dict) else None
        if transition_id is None:
            raise ServiceError(400, "Missing 'transition' identifier")
        chosen = next((t for t in issue["workflow"]["transitions"] if t["id"] == str(transition_id)), None)
        if chosen is None:
            raise ServiceError(400, f"Transition id '{transition_id}' is not valid for this issue.")
        assert isinstance(body, dict)
        author = self.user_for(basic_auth_user(request) or "unknown@example.com")
        update = body.get("update") or {}
        for operation in update.get("comment", []) if isinstance(update, dict) else []:
            add = operation.get("add") if isinstance(operation, dict) else None
            if isinstance(add, dict):
                self._new_comment(issue, add.get("body"), author)
        previous = issue["status"]
        issue["status"] = chosen["to"]
        issue["updated"] = jira_time(utc_now())
        issue["history"].append(
            {
                "time": issue["updated"],
                "author": author["emailAddress"],
                "transition": {"id": chosen["id"], "name": chosen["name"]},
                "from": previous,
                "to": chosen["to"],
            }
        )
        return Response(status_code=204)

    # ---------------------------------------------------------------- rendering

    def _render_user(self, base: str, account_id: str | None) -> JSON | None:
        if account_id is None:
            return None
        user = self.users[account_id]
        rendered = {
            "self": f"{base}/rest/api/3/user?accountId={account_id}",
            "accountId": account_id,
            "emailAddress": user["emailAddress"],
            "displayName": user["displayName"],
            "active": True,
            "timeZone": "Etc/UTC",
            "accountType": "atlassian",
        }
        if not user["emailVisible"]:
            # Jira Cloud leaves emailAddress out when the user's profile hides it (a common default).
            del rendered["emailAddress"]
        return rendered

    def _render_status(self, base: str, issue: JSON, name: str) -> JSON:
        status = issue["workflow"]["statuses"][name]
        category = STATUS_CATEGORIES[status["category"]]
        return {
            "self": f"{base}/rest/api/3/status/{status['id']}",
            "description": "",
            "iconUrl": f"{base}/images/icons/statuses/generic.png",
            "name": name,
            "id": status["id"],
            "statusCategory": {"self": f"{base}/rest/api/3/statuscategory/{category['id']}", **category},
        }

    def _render_comment(self, base: str, issue: JSON, comment: JSON) -> JSON:
        author = self._render_user(base, comment["author"])
        rendered = {
            "self": f"{base}/rest/api/3/issue/{issue['id']}/comment/{comment['id']}",
            "id": comment["id"],
            "author": author,
            "body": comment["body"],
            "updateAuthor": author,
            "created": comment["created"],
            "updated": comment["updated"],
            "jsdPublic": comment["visibility"] is None,
        }
        if comment["visibility"] is not None:
            rendered["visibility"] = comment["visibility"]
        return rendered

    def _render_fields(self, base: str, issue: JSON) -> JSON:
        project_key = issue["key"].split("-", 1)[0]
        comments = [self._render_comment(base, issue, c) for c in issue["comments"]]
        fields: JSON = {
            "summary": issue["summary"],
            "description": issue["description"],
            "status": self._render_status(base, issue, issue["status"]),
            "priority": {
                "self": f"{base}/rest/api/3/priority/{PRIORITIES.get(issue['priority'], '3')}",
                "iconUrl": f"{base}/images/icons/priorities/{issue['priority'].lower()}.svg",
                "name": issue["priority"],
                "id": PRIORITIES.get(issue["priority"], "3"),
            },
            "issuetype": {
                "self": f"{base}/rest/api/3/issuetype/10004",
                "id": "10004",
                "description": "",
                "iconUrl": f"{base}/images/icons/issuetypes/generic.svg",
                "name": issue["issuetype"],
                "subtask": False,
            },
            "project": {
                "self": f"{base}/rest/api/3/project/10000",
                "id": "10000",
                "key": project_key,
                "name": project_key,
                "projectTypeKey": "service_desk",
            },
            "assignee": self._render_user(base, issue["assignee"]),
            "reporter": self._render_user(base, issue["reporter"]),
            "creator": self._render_user(base, issue["reporter"]),
            "labels": list(issue["labels"]),
            "created": issue["created"],
            "updated": issue["updated"],
            "comment": {
                "comments": comments,
                "maxResults": len(comments),
                "total": len(comments),
                "startAt": 0,
            },
        }
        fields.update(issue["fields"])
        return fields

    # ---------------------------------------------------------------- seeding (control API)

    def user_for(self, ref: object, email_visible: bool = True) -> JSON:
        """A Jira user by email (or an object with emailAddress/displayName/accountId), created if new.

        Account ids are derived from the email, so the same person gets the same id in every run.
        """
        if isinstance(ref, str):
            spec: JSON = {"emailAddress": ref}
        elif isinstance(ref, dict):
            reject_unknown_keys(ref, ("emailAddress", "displayName", "accountId", "emailVisible"), "user")
            spec = ref
        else:
            raise SeedError("a Jira user is an email string or an object with emailAddress")
        email = require_str(spec, "emailAddress", "user")
        account_id = spec.get("accountId") or hashlib.sha256(email.casefold().encode()).hexdigest()[:24]
        existing = self.users.get(account_id)
        if existing is not None and "emailVisible" not in spec and "displayName" not in spec:
            return existing
        user = {
            "accountId": account_id,
            "emailAddress": email,
            "displayName": spec.get("displayName") or email.split("@", 1)[0],
            "emailVisible": bool(spec.get("emailVisible", email_visible)),
        }
        self.users[account_id] = user
        return user

    def seed_issue(self, spec: object) -> JSON:
        if not isinstance(spec, dict):
            raise SeedError("an issue is a JSON object")
        reject_unknown_keys(spec, ISSUE_SEED_KEYS, "issue")
        key = require_str(spec, "key", "issue").upper()
        if "-" not in key or not key.split("-", 1)[1].isdigit():
            raise SeedError(f"issue.key {key!r} must look like PROJ-123")
        existing = self.issues.get(key)
        issue_id = str(spec.get("id") or (existing["id"] if existing else next(self._issue_ids)))
        if any(i["id"] == issue_id and i["key"] != key for i in self.issues.values()):
            raise ConflictError(f"issue id {issue_id} already belongs to another issue")
        workflow = self._workflow(spec.get("workflow"))
        status = spec.get("status", next(iter(workflow["statuses"])))
        if status not in workflow["statuses"]:
            raise SeedError(f"issue.status {status!r} is not in the workflow {list(workflow['statuses'])}")
        priority = spec.get("priority", "Medium")
        if priority not in PRIORITIES:
            raise SeedError(f"issue.priority must be one of {list(PRIORITIES)}")
        labels = spec.get("labels", [])
        extra = spec.get("fields", {})
        if not isinstance(labels, list) or not isinstance(extra, dict):
            raise SeedError("issue.labels is a list and issue.fields an object (custom fields by id)")
        now = jira_time(utc_now())
        issue = {
            "id": issue_id,
            "key": key,
            "summary": str(spec.get("summary") or f"Issue {key}"),
            "description": spec.get("description"),
            "status": status,
            "priority": priority,
            "issuetype": str(spec.get("issuetype") or "Incident"),
            "assignee": self.user_for(spec["assignee"])["accountId"] if spec.get("assignee") else None,
            "reporter": self.user_for(spec["reporter"])["accountId"] if spec.get("reporter") else None,
            "labels": labels,
            "fields": extra,
            "created": now,
            "updated": now,
            "comments": [],
            "history": [],
            "workflow": workflow,
        }
        self.issues[key] = issue
        return self.issue_view(key)

    def _workflow(self, spec: object) -> JSON:
        if spec is None:
            entries: list[tuple[str, str]] = list(DEFAULT_WORKFLOW)
        elif isinstance(spec, list) and spec:
            entries = []
            for item in spec:
                if isinstance(item, str):
                    entries.append((item, "indeterminate"))
                elif (
                    isinstance(item, dict)
                    and isinstance(item.get("name"), str)
                    and item.get("category", "indeterminate") in STATUS_CATEGORIES
                ):
                    entries.append((item["name"], str(item.get("category", "indeterminate"))))
                else:
                    raise SeedError(
                        "issue.workflow entries are status names or "
                        '{"name", "category": new|indeterminate|done}'
                    )
        else:
            raise SeedError("issue.workflow must be a non-empty list of statuses")
        statuses = {name: {"id": str(10000 + i), "category": cat} for i, (name, cat) in enumerate(entries)}
        # Transition ids as Jira numbers them (11, 21, 31, ...), each named after its target status.
        transitions = [{"id": str(11 + 10 * i), "name": name, "to": name} for i, name in enumerate(statuses)]
        return {"statuses": statuses, "transitions": transitions}

    def issue_view(self, key: str) -> JSON:
        issue = self.issues.get(key.upper())
        if issue is None:
            raise SeedError(f"no Jira issue {key!r}")
        return {
            "key": issue["key"],
            "id": issue["id"],
            "status": issue["status"],
            "priority": issue["priority"],
            "assignee": self.users[issue["assignee"]] if issue["assignee"] else None,
            "reporter": self.users[issue["reporter"]] if issue["reporter"] else None,
            "labels": issue["labels"],
            "fields": issue["fields"],
            "comments": [
                {**c, "author": self.users[c["author"]]["emailAddress"], "text": adf_text(c["body"])}
                for c in issue["comments"]
            ],
            "transitions": [{"id": t["id"], "name": t["name"]} for t in issue["workflow"]["transitions"]],
            "history": list(issue["history"]),
        }
