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
    CreateUserRequest,
    FindByDepartmentUserRequest,
    User,
)
from lark_oapi.api.im.v1 import CreateMessageRequest, CreateMessageRequestBody
from lark_oapi.core.model import RawRequest
from lark_oapi.core.token import TokenManager
from sdk_common import check, http_json, parse_args, sandbox_get


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
