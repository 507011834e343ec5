"""Drives the DingTalk sandbox with the official SDKs (alibabacloud-dingtalk for the v1.0 API,
dingtalk-stream for Stream mode). Run by connectors/tests/dingtalk_sdk.rs; prints
"ALL SDK CHECKS PASSED" on success, exits non-zero on the first failure."""

import asyncio
import faulthandler
import os
import sys

from sdk_common import check, http_json, parse_args


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


async def stream_checks(a):
    # The SDK reads the endpoint at import time.
    os.environ["DINGTALK_OPENAPI_ENDPOINT"] = a.base
    import dingtalk_stream
    from dingtalk_stream import AckMessage

    got = asyncio.get_running_loop().create_future()

    class Handler(dingtalk_stream.EventHandler):
        async def process(self, event):
            if not got.done():
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
              f"event received by the SDK ({event_type} {data})")
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
    loop = asyncio.new_event_loop()
    loop.run_until_complete(stream_checks(a))
    print("ALL SDK CHECKS PASSED", flush=True)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
