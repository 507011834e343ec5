"""Checks the Feishu sandbox with the official SDK (lark-oapi).

Run by connectors/tests/feishu_sdk.rs:
    python feishu_sdk_check.py --base http://127.0.0.1:PORT --app-id cli_test --app-secret s3cret \
        --encrypt-key EK --verification-token VT --events FILE
`FILE` holds event deliveries the sandbox made ([{"headers": {...}, "body": "..."}]).
Exits non-zero (with a message) on the first failed check; prints one line per check passed.
"""

import json
import os
import sys
import threading
import time

import lark_oapi as lark
from lark_oapi.api.contact.v3 import (
    ChildrenDepartmentRequest,
    CreateDepartmentRequest,
    CreateUserRequest,
    DeleteDepartmentRequest,
    DeleteUserRequest,
    DeleteUserRequestBody,
    Department,
    FindByDepartmentUserRequest,
    GetDepartmentRequest,
    GetUserRequest,
    PatchDepartmentRequest,
    PatchUserRequest,
    UpdateUserRequest,
    User,
)
from lark_oapi.api.im.v1 import CreateMessageRequest, CreateMessageRequestBody
from lark_oapi.core.model import RawRequest
from lark_oapi.core.token import TokenManager
from sdk_common import check, http_json, org_entry, parse_args, sandbox_get


def contact_write_checks(a, client):
    """What sync does to a Feishu org, through lark-oapi's contact v3 clients: a department and a
    user created, read back, listed, changed and deleted, each effect checked in the sandbox's
    org view."""
    user = client.contact.v3.user
    dept = client.contact.v3.department
    by_od = lambda od: org_entry(a.base, "departments", lambda d: d["feishu"]["open_department_id"] == od)
    by_open_id = lambda oid: org_entry(a.base, "users", lambda u: u["feishu"]["open_id"] == oid)
    org = sandbox_get(a.base, "/_sandbox/org")
    root = next(d for d in org["departments"] if d["parent"] is None)
    other = next(d for d in org["departments"] if d["parent"] == root["key"])
    other_od = other["feishu"]["open_department_id"]

    def children_of(od):
        r = dept.children(ChildrenDepartmentRequest.builder().department_id(od)
                          .department_id_type("open_department_id").page_size(50).build())
        check(r.success(), f"children of {od} (code {r.code}, {r.msg})")
        return [d.open_department_id for d in (r.data.items or [])]

    def members_of(od):
        r = user.find_by_department(FindByDepartmentUserRequest.builder().department_id(od)
                                    .department_id_type("open_department_id").user_id_type("open_id")
                                    .page_size(50).build())
        check(r.success(), f"find_by_department {od} (code {r.code}, {r.msg})")
        return [u.open_id for u in (r.data.items or [])]

    # Department: create under the root, read back, list, patch (rename, reorder, move).
    r = dept.create(
        CreateDepartmentRequest.builder().user_id_type("open_id").department_id_type("open_department_id")
        .client_token("sdk-dept-1")
        .request_body(Department.builder().name("SDK 部门").parent_department_id("0").order("50").build())
        .build())
    check(r.success(), f"create department (code {r.code}, {r.msg})")
    od = r.data.department.open_department_id
    d = by_od(od)
    check(d is not None and d["name"] == "SDK 部门" and d["parent"] == root["key"] and d["order"] == 50,
          f"the created department is in the sandbox org under the root ({d})")
    r = dept.get(GetDepartmentRequest.builder().department_id(od).department_id_type("open_department_id").build())
    check(r.success() and r.data.department.name == "SDK 部门" and r.data.department.parent_department_id == "0",
          "get department reads it back")
    check(od in children_of("0"), "children of the root list the new department")
    r = dept.patch(
        PatchDepartmentRequest.builder().department_id(od).department_id_type("open_department_id")
        .user_id_type("open_id")
        .request_body(Department.builder().name("SDK 部门改").parent_department_id(other_od).order("60").build())
        .build())
    check(r.success(), f"patch department (code {r.code}, {r.msg})")
    d = by_od(od)
    check(d["name"] == "SDK 部门改" and d["order"] == 60 and d["parent"] == other["key"],
          f"patch department: renamed, reordered, moved in the org ({d})")
    check(od in children_of(other_od) and od not in children_of("0"), "children list it under its new parent")

    # User: create in the new department, read back, list, patch, update, delete.
    r = user.create(
        CreateUserRequest.builder().user_id_type("open_id").department_id_type("open_department_id")
        .client_token("sdk-user-2")
        .request_body(User.builder().name("SDK 写入").en_name("SDK Writer").mobile("+8613900002222")
                      .email("sdk.writer@example.cn").department_ids([od]).employee_type(1)
                      .employee_no("SDK001").job_title("工程师").gender(2).build())
        .build())
    check(r.success(), f"create user (code {r.code}, {r.msg})")
    oid = r.data.user.open_id
    u = by_open_id(oid)
    check(u is not None, "the created user is in the sandbox org")
    want = {"name": "SDK 写入", "en_name": "SDK Writer", "mobile": "13900002222", "email": "sdk.writer@example.cn",
            "employee_no": "SDK001", "title": "工程师", "gender": "female", "departments": [d["key"]], "active": True}
    check({k: u[k] for k in want} == want, f"create user: the fields sent are in the org ({u})")
    r = user.get(GetUserRequest.builder().user_id(oid).user_id_type("open_id")
                 .department_id_type("open_department_id").build())
    check(r.success() and r.data.user.name == "SDK 写入" and r.data.user.job_title == "工程师"
          and r.data.user.department_ids == [od], "get user reads it back")
    check(members_of(od) == [oid], "find_by_department lists the user in the new department")

    r = user.patch(
        PatchUserRequest.builder().user_id(oid).user_id_type("open_id").department_id_type("open_department_id")
        .request_body(User.builder().job_title("经理").email("sdk.w2@example.cn").build())
        .build())
    check(r.success(), f"patch user (code {r.code}, {r.msg})")
    u = by_open_id(oid)
    check(u["title"] == "经理" and u["email"] == "sdk.w2@example.cn", f"patch user: job_title, email changed ({u})")
    check(u["name"] == "SDK 写入" and u["mobile"] == "13900002222" and u["departments"] == [d["key"]],
          "patch user: fields not sent are unchanged")

    # PUT (update) replaces the record: a full body, moved into two departments.
    r = user.update(
        UpdateUserRequest.builder().user_id(oid).user_id_type("open_id").department_id_type("open_department_id")
        .request_body(User.builder().name("SDK 写入2").mobile("+8613900002222").email("sdk.w2@example.cn")
                      .department_ids([od, other_od]).employee_type(1).job_title("总监").build())
        .build())
    check(r.success(), f"update user (code {r.code}, {r.msg})")
    u = by_open_id(oid)
    check(u["name"] == "SDK 写入2" and u["title"] == "总监" and u["departments"] == [d["key"], other["key"]],
          f"update user: renamed, retitled, in two departments ({u})")
    check(oid in members_of(other_od), "find_by_department lists the user in its second department")

    r = dept.delete(DeleteDepartmentRequest.builder().department_id(od).department_id_type("open_department_id").build())
    check(not r.success() and by_od(od) is not None, f"delete of a department with a member refused (code {r.code})")
    r = user.delete(DeleteUserRequest.builder().user_id(oid).user_id_type("open_id")
                    .request_body(DeleteUserRequestBody.builder().build()).build())
    check(r.success(), f"delete user (code {r.code}, {r.msg})")
    check(by_open_id(oid) is None, "delete user: gone from the sandbox org")
    r = user.get(GetUserRequest.builder().user_id(oid).user_id_type("open_id").build())
    check(not r.success(), f"get of the deleted user fails (code {r.code})")
    r = dept.delete(DeleteDepartmentRequest.builder().department_id(od).department_id_type("open_department_id").build())
    check(r.success(), f"delete department (code {r.code}, {r.msg})")
    check(by_od(od) is None, "delete department: gone from the sandbox org")
    check(od not in children_of(other_od), "children no longer list it")


def main():
    a = parse_args("base", "app-id", "app-secret", "encrypt-key", "verification-token", "events")

    TokenManager.cache.cache.clear()  # process-global, keyed by app_id only
    client = (
        lark.Client.builder()
        .app_id(a.app_id)
        .app_secret(a.app_secret)
        .domain(a.base)
        .log_level(lark.LogLevel.ERROR)
        .build()
    )

    org = sandbox_get(a.base, "/_sandbox/org")
    # The department with the most direct members, listed 5 per page.
    counts = {}
    for u in org["users"]:
        for d in u["departments"]:
            counts[d] = counts.get(d, 0) + 1
    key = max(counts, key=counts.get)
    dept = next(d for d in org["departments"] if d["key"] == key)
    dept_id = dept["feishu"]["open_department_id"]
    expected = {u["feishu"]["open_id"] for u in org["users"] if key in u["departments"]}

    got, token, pages = set(), None, 0
    while True:
        b = (
            FindByDepartmentUserRequest.builder()
            .department_id(dept_id)
            .department_id_type("open_department_id")
            .user_id_type("open_id")
            .page_size(5)
        )
        if token:
            b = b.page_token(token)
        r = client.contact.v3.user.find_by_department(b.build())
        check(r.success(), f"find_by_department page {pages + 1} (code {r.code}, {r.msg})")
        pages += 1
        got |= {u.open_id for u in (r.data.items or [])}
        if not r.data.has_more:
            break
        token = r.data.page_token
    check(got == expected, f"listed all {len(expected)} members of {key} in {pages} pages")
    check(pages >= 2, "the listing spanned several pages")

    r = client.contact.v3.department.children(
        ChildrenDepartmentRequest.builder().department_id("0").fetch_child(True).page_size(50).build()
    )
    check(r.success() and len(r.data.items) == len(org["departments"]) - 1, "children of 0 with fetch_child=True")

    r = client.contact.v3.user.create(
        CreateUserRequest.builder()
        .user_id_type("open_id")
        .department_id_type("open_department_id")
        .request_body(
            User.builder()
            .name("SDK 用户")
            .mobile("+8613900001111")
            .department_ids([dept_id])
            .employee_type(1)
            .email("sdk@example.cn")
            .build()
        )
        .build()
    )
    check(r.success(), f"create user (code {r.code}, {r.msg})")
    new_open_id = r.data.user.open_id
    after = sandbox_get(a.base, "/_sandbox/org")
    check(
        any(u["feishu"]["open_id"] == new_open_id and u["name"] == "SDK 用户" for u in after["users"]),
        "the created user is in the sandbox org",
    )

    r = client.im.v1.message.create(
        CreateMessageRequest.builder()
        .receive_id_type("open_id")
        .request_body(
            CreateMessageRequestBody.builder()
            .receive_id(new_open_id)
            .msg_type("text")
            .content(json.dumps({"text": "hi from the SDK"}))
            .uuid("sdk-dedupe-1")
            .build()
        )
        .build()
    )
    check(r.success() and r.data.message_id.startswith("om_"), f"send message (code {r.code})")
    check(r.get_log_id() is not None, "the SDK sees the X-Tt-Logid header")
    msgs = sandbox_get(a.base, "/_sandbox/messages")["messages"]
    check(any(m.get("content") == {"text": "hi from the SDK"} for m in msgs), "the message is recorded by the sandbox")

    contact_write_checks(a, client)

    # The SDK's own webhook handler accepts the sandbox's encrypted, signed events.
    seen = []
    handler = (
        lark.EventDispatcherHandler.builder(a.encrypt_key, a.verification_token)
        .register_p2_contact_user_created_v3(lambda d: seen.append(("created", d.event.object.open_id)))
        .register_p2_contact_user_updated_v3(lambda d: seen.append(("updated", d.event.object.open_id)))
        .build()
    )
    with open(a.events) as f:
        deliveries = json.load(f)
    check(len(deliveries) >= 2, f"{len(deliveries)} captured deliveries")

    def raw(d, body):
        req = RawRequest()
        req.uri = "/webhook/event"
        req.headers = {"-".join(p.capitalize() for p in k.split("-")): v for k, v in d["headers"].items()}
        req.body = body
        return req

    for d in deliveries:
        resp = handler.do(raw(d, d["body"].encode()))
        check(resp.status_code == 200, f"SDK handler accepted a sandbox event (status {resp.status_code})")
    check([s[0] for s in seen] == ["created", "updated"][: len(seen)] and len(seen) == len(deliveries), f"handlers ran: {seen}")

    # A tampered body fails the SDK's signature check: same ciphertext, one byte added.
    d = deliveries[0]
    tampered = d["body"].replace('{"encrypt":"', '{"encrypt": "', 1)
    check(tampered != d["body"], "tampered body differs")
    before = len(seen)
    resp = handler.do(raw(d, tampered.encode()))
    check(resp.status_code != 200 and len(seen) == before, f"SDK handler rejected a tampered event (status {resp.status_code})")
    check(b"signature verification failed" in (resp.content or b""), f"rejected for its signature: {resp.content!r}")

    # The SDK's long-connection client receives events from the sandbox's WebSocket and acks them.
    got = []
    arrived = threading.Event()

    def on_ws_created(d):
        got.append(d.event.object.open_id)
        arrived.set()

    ws_handler = lark.EventDispatcherHandler.builder("", "").register_p2_contact_user_created_v3(on_ws_created).build()
    wsc = lark.ws.Client(a.app_id, a.app_secret, event_handler=ws_handler, domain=a.base, log_level=lark.LogLevel.ERROR)
    threading.Thread(target=wsc.start, daemon=True).start()
    connects = lambda: sandbox_get(a.base, "/_sandbox/calls")["calls"].get("WS connect", 0)
    acks = lambda: sandbox_get(a.base, "/_sandbox/calls")["calls"].get("WS ack 200", 0)
    before_connects, before_acks = connects(), acks()
    for _ in range(400):
        if connects() > before_connects:
            break
        time.sleep(0.05)
    check(connects() > before_connects, "SDK long-connection client connected")
    _, created = http_json("POST", a.base + "/_sandbox/org/users",
                           {"key": "ws-sdk", "name": "长连接 SDK", "departments": [key]})
    check(arrived.wait(20), "SDK long-connection client received the event")
    check(got == [created["open_id"]], f"event for the created user: {got}")
    for _ in range(400):
        if acks() > before_acks:
            break
        time.sleep(0.05)
    check(acks() > before_acks, "the SDK acked the data frame with code 200")
    print("ALL SDK CHECKS PASSED")
    sys.stdout.flush()
    os._exit(0)  # the SDK's WebSocket client has no stop(); end the process here


if __name__ == "__main__":
    main()
