"""Drives the DingTalk sandbox with the official SDKs (alibabacloud-dingtalk for the v1.0 API,
dingtalk-stream for Stream mode). Run by connectors/tests/dingtalk_sdk.rs; prints
"ALL SDK CHECKS PASSED" on success, exits non-zero on the first failure.

The org chart sync reads and writes lives in the old API (`topapi/v2/user|department/…`), which
no official Python SDK wraps: alibabacloud-dingtalk has typed clients for api.dingtalk.com
(v1.0) only, and the PyPI packages named `dingtalk-sdk` / `dingtalk` are third-party. Those calls
go through the official SDK's own request machinery instead: `execute` of an alibabacloud-dingtalk
client (the tea OpenApi client with DingTalk's gateway, which every typed call uses), with a
pathname under `/topapi/v2/` and `?access_token=`, as DingTalk's old API takes it."""

import asyncio
import faulthandler
import os
import sys

from sdk_common import check, http_json, org_entry, parse_args, sandbox_get


def openapi_checks(a):
    from alibabacloud_tea_openapi import models as om
    from alibabacloud_tea_util import models as util_models
    from alibabacloud_dingtalk.oauth2_1_0.client import Client as OAuthClient
    from alibabacloud_dingtalk.oauth2_1_0 import models as oauth_models
    from alibabacloud_dingtalk.todo_1_0.client import Client as TodoClient
    from alibabacloud_dingtalk.todo_1_0 import models as todo_models
    from alibabacloud_dingtalk.robot_1_0.client import Client as RobotClient
    from alibabacloud_dingtalk.robot_1_0 import models as robot_models

    endpoint = a.base.replace("http://", "")
    cfg = om.Config(protocol="http", endpoint=endpoint)
    rt = util_models.RuntimeOptions(autoretry=False)

    # 1. Token.
    r = OAuthClient(cfg).get_access_token(
        oauth_models.GetAccessTokenRequest(app_key=a.app_key, app_secret=a.app_secret))
    token = r.body.access_token
    check(bool(token) and r.body.expire_in == 7200, "oauth2 accessToken via the SDK")
    try:
        OAuthClient(cfg).get_access_token(
            oauth_models.GetAccessTokenRequest(app_key=a.app_key, app_secret="wrong"))
        check(False, "bad secret is refused")
    except Exception as e:  # tea exception with .code
        check(getattr(e, "code", "") == "invalidClientIdOrSecret", f"bad secret is refused ({getattr(e, 'code', e)})")

    # 2. Todo: create, then list it back.
    todo = TodoClient(cfg)
    th = todo_models.CreateTodoTaskHeaders(x_acs_dingtalk_access_token=token)
    created = todo.create_todo_task_with_options(
        a.union_id,
        todo_models.CreateTodoTaskRequest(subject="SDK 待办", executor_ids=[a.union_id],
                                          operator_id=a.union_id, priority=20),
        th, rt)
    task_id = created.body.id
    check(bool(task_id) and created.body.subject == "SDK 待办", f"todo created ({task_id})")
    q = todo.query_org_todo_tasks_with_options(
        a.union_id, todo_models.QueryOrgTodoTasksRequest(is_done=False),
        todo_models.QueryOrgTodoTasksHeaders(x_acs_dingtalk_access_token=token), rt)
    ids = [c.task_id for c in (q.body.todo_cards or [])]
    check(task_id in ids, "todo listed by query_org_todo_tasks")
    g = todo.get_todo_task_with_options(
        a.union_id, task_id, todo_models.GetTodoTaskHeaders(x_acs_dingtalk_access_token=token), rt)
    check(g.body.subject == "SDK 待办" and g.body.executor_ids == [a.union_id], "todo read back")

    # An invalid token raises InvalidAuthentication.
    try:
        todo.get_todo_task_with_options(
            a.union_id, task_id, todo_models.GetTodoTaskHeaders(x_acs_dingtalk_access_token="bad"), rt)
        check(False, "bad token is refused")
    except Exception as e:
        check(getattr(e, "code", "") == "InvalidAuthentication", "bad token raises InvalidAuthentication")

    # 3. Robot: group message and one-to-one.
    robot = RobotClient(cfg)
    g = robot.org_group_send_with_options(
        robot_models.OrgGroupSendRequest(robot_code=a.app_key, open_conversation_id="cidSDK",
                                         msg_key="sampleText", msg_param='{"content":"来自SDK"}'),
        robot_models.OrgGroupSendHeaders(x_acs_dingtalk_access_token=token), rt)
    check(bool(g.body.process_query_key), "robot group message sent")
    o = robot.batch_send_otowith_options(
        robot_models.BatchSendOTORequest(robot_code=a.app_key, user_ids=[a.user_id],
                                         msg_key="sampleMarkdown", msg_param='{"title":"t","text":"**x**"}'),
        robot_models.BatchSendOTOHeaders(x_acs_dingtalk_access_token=token), rt)
    check(bool(o.body.process_query_key), "robot one-to-one message sent")


def contact_checks(a):
    """What sync does to a DingTalk org (`topapi/v2` department and user calls), each effect
    checked in the sandbox's org view."""
    from alibabacloud_tea_openapi import models as om
    from alibabacloud_tea_util import models as util_models
    from alibabacloud_dingtalk.contact_1_0.client import Client as ContactClient
    from alibabacloud_dingtalk.oauth2_1_0.client import Client as OAuthClient
    from alibabacloud_dingtalk.oauth2_1_0 import models as oauth_models

    cfg = om.Config(protocol="http", endpoint=a.base.replace("http://", ""))
    rt = util_models.RuntimeOptions(autoretry=False)
    token = OAuthClient(cfg).get_access_token(
        oauth_models.GetAccessTokenRequest(app_key=a.app_key, app_secret=a.app_secret)).body.access_token
    client = ContactClient(cfg)

    def topapi(call, body, errcode=0):
        """POST /topapi/v2/<call>?access_token= with a JSON body, through the SDK's `execute`."""
        params = om.Params(action=call, version="topapi", protocol="HTTP", pathname="/topapi/v2/" + call,
                           method="POST", auth_type="Anonymous", style="ROA", req_body_type="json",
                           body_type="json")
        req = om.OpenApiRequest(query={"access_token": token}, body=body)
        r = client.execute(params, req, rt)
        got = r["body"]
        check(r["statusCode"] == 200 and got.get("errcode") == errcode,
              f"topapi/v2/{call} answered errcode {got.get('errcode')} ({got.get('errmsg')}), want {errcode}")
        return got

    by_id = lambda i: org_entry(a.base, "departments", lambda d: d["dingtalk"]["dept_id"] == i)
    by_userid = lambda u: org_entry(a.base, "users", lambda x: x["dingtalk"]["userid"] == u)
    root = by_id(1)
    other = next(d for d in sandbox_get(a.base, "/_sandbox/org")["departments"] if d["parent"] == root["key"])
    other_id = other["dingtalk"]["dept_id"]
    sub_ids = lambda i: [d["dept_id"] for d in topapi("department/listsub", {"dept_id": i})["result"]]

    # Department: create, read back, list, update (rename, reorder, move).
    dept_id = topapi("department/create", {"name": "SDK部门", "parent_id": 1, "order": 5})["result"]["dept_id"]
    d = by_id(dept_id)
    check(d is not None and d["name"] == "SDK部门" and d["parent"] == root["key"] and d["order"] == 5,
          f"department/create {dept_id}: in the org under the root ({d})")
    g = topapi("department/get", {"dept_id": dept_id})["result"]
    check(g["name"] == "SDK部门" and g["parent_id"] == 1, "department/get reads it back")
    check(dept_id in sub_ids(1), "department/listsub of the root lists it")
    topapi("department/update", {"dept_id": dept_id, "name": "SDK部门改", "parent_id": other_id, "order": 9})
    d = by_id(dept_id)
    check(d["name"] == "SDK部门改" and d["order"] == 9 and d["parent"] == other["key"],
          f"department/update: renamed, reordered, moved in the org ({d})")
    check(dept_id in sub_ids(other_id) and dept_id not in sub_ids(1), "listsub lists it under its new parent")

    # User: create in the new department, read back, list, update, delete.
    uid = "sdkwriter"
    r = topapi("user/create", {"userid": uid, "name": "SDK 成员", "mobile": "13900002222",
                               "dept_id_list": str(dept_id), "title": "工程师",
                               "email": "sdk.writer@example.cn", "job_number": "SDK001",
                               "hired_date": 1729958400000})["result"]
    check(r["userid"] == uid and bool(r.get("unionId")), "user/create answers userid and unionId")
    u = by_userid(uid)
    check(u is not None, "user/create: the user is in the org")
    want = {"name": "SDK 成员", "mobile": "13900002222", "email": "sdk.writer@example.cn", "title": "工程师",
            "employee_no": "SDK001", "hired_at": "2024-10-27", "departments": [d["key"]]}
    check({k: u[k] for k in want} == want, f"user/create: the fields sent are in the org ({u})")
    g = topapi("user/get", {"userid": uid})["result"]
    check(g["name"] == "SDK 成员" and g["title"] == "工程师" and g["dept_id_list"] == [dept_id],
          "user/get reads it back")
    rows = topapi("user/list", {"dept_id": dept_id, "cursor": 0, "size": 10})["result"]
    check([x["userid"] for x in rows["list"]] == [uid] and rows["has_more"] is False,
          "user/list of the new department")

    topapi("user/update", {"userid": uid, "title": "经理", "dept_id_list": f"{dept_id},{other_id}",
                           "email": "sdk.w2@example.cn"})
    u = by_userid(uid)
    check(u["title"] == "经理" and u["email"] == "sdk.w2@example.cn", f"user/update: title, email changed ({u})")
    check(u["departments"] == [d["key"], other["key"]], "user/update: now in two departments")
    check(u["name"] == "SDK 成员" and u["mobile"] == "13900002222" and u["employee_no"] == "SDK001",
          "user/update: fields not sent are unchanged")
    rows = topapi("user/list", {"dept_id": other_id, "cursor": 0, "size": 100})["result"]
    check(uid in [x["userid"] for x in rows["list"]], "user/list of its second department lists it")

    topapi("department/delete", {"dept_id": dept_id}, errcode=60005)
    check(by_id(dept_id) is not None, "department/delete with a member refused (60005), still in the org")
    topapi("user/delete", {"userid": uid})
    check(by_userid(uid) is None, "user/delete: gone from the org")
    topapi("user/get", {"userid": uid}, errcode=60121)
    topapi("department/delete", {"dept_id": dept_id})
    check(by_id(dept_id) is None, "department/delete: gone from the org")
    topapi("department/get", {"dept_id": dept_id}, errcode=60003)
    check(dept_id not in sub_ids(other_id), "listsub no longer lists it")

    # A bad token is refused the old API's way (HTTP 200, errcode 40014).
    token, good = "bad", token
    topapi("user/get", {"userid": "u1"}, errcode=40014)
    token = good


async def stream_checks(a):
    # The SDK reads the endpoint at import time.
    os.environ["DINGTALK_OPENAPI_ENDPOINT"] = a.base
    import dingtalk_stream
    from dingtalk_stream import AckMessage

    got = asyncio.get_running_loop().create_future()
    seen = []

    class Handler(dingtalk_stream.EventHandler):
        # The org events of contact_checks' writes may arrive first: each is acked, and `got`
        # is the console change's.
        async def process(self, event):
            seen.append(event.headers.event_type)
            if not got.done() and event.data.get("userId") == ["sdkstream"]:
                got.set_result((event.headers.event_type, event.data))
            return AckMessage.STATUS_OK, "OK"

    client = dingtalk_stream.DingTalkStreamClient(
        dingtalk_stream.Credential(a.app_key, a.app_secret))
    client.register_all_event_handler(Handler())
    task = asyncio.create_task(client.start())
    try:
        # Wait for the connection, then make a change in the "console".
        for _ in range(200):
            _, s = http_json("GET", a.base + "/_sandbox/stream")
            if s["connections"] >= 1:
                break
            await asyncio.sleep(0.05)
        check(s["connections"] >= 1, "dingtalk-stream connected to the gateway")
        status, _ = http_json("POST", a.base + "/_sandbox/org/users",
                              {"key": "sdkstream", "name": "流式", "departments": [a.dept_key]})
        check(status == 201, "console change made")
        event_type, data = await asyncio.wait_for(got, 20)
        check(event_type == "user_add_org" and data.get("userId") == ["sdkstream"],
              f"event received by the SDK ({event_type} {data}; all: {seen})")
        for _ in range(200):
            _, s = http_json("GET", a.base + "/_sandbox/stream")
            if s["pending"] == 0 and any(x["matched"] for x in s["acks"]):
                break
            await asyncio.sleep(0.05)
        check(s["pending"] == 0 and any(x["matched"] and x["code"] == 200 for x in s["acks"]),
              "the SDK acked the event")
    finally:
        # The SDK's start() loop swallows CancelledError and reconnects; the process exits
        # with os._exit in main instead of waiting for it.
        task.cancel()


def main():
    # Never hang a test run: dump the stacks and exit after 90 s.
    faulthandler.dump_traceback_later(90, exit=True)
    a = parse_args("base", "app-key", "app-secret", "union-id", "user-id", "dept-key")
    openapi_checks(a)
    contact_checks(a)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(stream_checks(a))
    print("ALL SDK CHECKS PASSED", flush=True)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
