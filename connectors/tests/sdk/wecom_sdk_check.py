"""Checks the WeCom sandbox and huitong's WeCom receiver with wechatpy (1.8.x, `wechatpy.enterprise`).

Run by connectors/tests/wecom_sdk.rs:
    python wecom_sdk_check.py --base http://127.0.0.1:PORT --corp-id C --secret S --agent-id N \
        --token T --aes-key K --events FILE --hub http://127.0.0.1:PORT/callbacks/wecom/main
`FILE` holds callback deliveries the sandbox made ([{"query": {...}, "body": "..."}]); `--hub`
is an endpoint served by huitong's `WecomReceiver`.
Exits non-zero (with a message) on the first failed check; prints one line per check passed.
"""

import json
import time

import requests
import xmltodict
from wechatpy.enterprise import WeChatClient
from wechatpy.enterprise.crypto import PrpCrypto, WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException, WeChatClientException
from wechatpy.utils import WeChatSigner, to_text
from sdk_common import check, expect_error, org_entry, parse_args, sandbox_get


def client_class(base):
    class EmuClient(WeChatClient):
        API_BASE_URL = base + "/cgi-bin/"

        def fetch_access_token(self):
            return self._fetch_access_token(
                url=self.API_BASE_URL + "gettoken",
                params={"corpid": self.corp_id, "corpsecret": self.secret},
            )

    return EmuClient


def api_checks(a):
    org = sandbox_get(a.base, "/_sandbox/org")
    Emu = client_class(a.base)
    c = Emu(a.corp_id, a.secret, timeout=10)

    depts = c.department.get()
    check(len(depts) == len(org["departments"]), f"department/list: {len(depts)} departments")
    ids = {d["id"] for d in depts}
    check(ids == {d["wecom"]["id"] for d in org["departments"]}, "department ids match the org")
    root = next(d for d in depts if d["id"] == 1)
    check(root["parentid"] == 0, "root department 1 with parentid 0")

    users = c.user.list(1, fetch_child=True)
    expected = {u["wecom"]["userid"] for u in org["users"]}
    check({u["userid"] for u in users} == expected, f"user/list fetch_child: {len(users)} users")
    check(all(isinstance(u["gender"], str) for u in users), "gender is a string")

    # The department with most direct members, simple listing.
    counts = {}
    for u in org["users"]:
        for d in u["wecom"]["department"]:
            counts[d] = counts.get(d, 0) + 1
    dept = max(counts, key=counts.get)
    simple = c.user.list(dept, simple=True)
    check(len(simple) == counts[dept], f"user/simplelist of {dept}: {len(simple)} members")

    rows, cursor, pages = [], "", 0
    while True:
        res = c.post("user/list_id", data={"cursor": cursor, "limit": 50})
        rows.extend(res["dept_user"])
        pages += 1
        cursor = res.get("next_cursor") or ""
        if not cursor:
            break
    check(len(rows) == sum(counts.values()) and pages > 1, f"user/list_id: {len(rows)} rows in {pages} pages")

    res = c.message.send_text(a.agent_id, ["u0", "u1", "nosuchuser"], "hello from wechatpy")
    check(res["errcode"] == 0 and res["msgid"], "message/send text")
    check(res["invaliduser"] == "nosuchuser", "invaliduser lists the unknown recipient")
    res = c.message.send(a.agent_id, "u0", msg={"msgtype": "markdown", "markdown": {"content": "**hi**"},
                                               "enable_duplicate_check": 1, "duplicate_check_interval": 600})
    check(res["errcode"] == 0, "message/send markdown with duplicate check")

    try:
        c.message.send_text(a.agent_id, ["nosuchuser"], "x")
        check(False, "81013 raises")
    except WeChatClientException as e:
        check(e.errcode == 81013, "all recipients invalid: 81013")

    bad = Emu(a.corp_id, "wrong-secret", timeout=10, auto_retry=False)
    try:
        bad.department.get()
        check(False, "a wrong secret raises")
    except WeChatClientException as e:
        check(e.errcode == 40001, "wrong secret: 40001")
    return c


def contact_write_checks(a, c):
    """What sync does to a WeCom org, through wechatpy (`c`): departments and members created,
    read back, listed, updated and deleted, each effect checked in the sandbox's org view."""
    code = lambda e: getattr(e, "errcode", None)
    dept_by_id = lambda i: org_entry(a.base, "departments", lambda d: d["wecom"]["id"] == i)
    user_by_id = lambda u: org_entry(a.base, "users", lambda x: x["wecom"]["userid"] == u)
    root = dept_by_id(1)
    other = next(d for d in sandbox_get(a.base, "/_sandbox/org")["departments"]
                 if d["parent"] == root["key"])

    # Department: create, read back, rename + reorder + move, list.
    res = c.department.create("SDK部门", parent_id=1, order=5)
    dept_id = res["id"]
    d = dept_by_id(dept_id)
    check(d is not None and d["name"] == "SDK部门" and d["parent"] == root["key"] and d["order"] == 5
          and d["wecom"]["parentid"] == 1, f"department/create {dept_id}: in the org under the root")
    got = c.department.get(dept_id)
    check([x["id"] for x in got] == [dept_id] and got[0]["name"] == "SDK部门" and got[0]["parentid"] == 1,
          "department/list?id= reads the new department back")
    c.department.update(dept_id, name="SDK部门改", parent_id=other["wecom"]["id"], order=9)
    d = dept_by_id(dept_id)
    check(d["name"] == "SDK部门改" and d["order"] == 9 and d["parent"] == other["key"]
          and d["wecom"]["parentid"] == other["wecom"]["id"], "department/update: renamed, reordered, moved")
    check(dept_id in {x["id"] for x in c.department.get(other["wecom"]["id"])},
          "the moved department is listed under its new parent")
    dept_key = d["key"]

    # Member: create, read back, list, update, disable.
    uid = "sdk.writer"
    c.user.create(uid, "SDK 成员", department=[dept_id], position="工程师", mobile="13900002222",
                  gender=2, email="sdk.writer@example.cn", alias="SDK Writer",
                  extattr={"attrs": [{"type": 0, "name": "工号", "text": {"value": "SDK001"}}]})
    u = user_by_id(uid)
    check(u is not None, "user/create: the member is in the org")
    want = {"name": "SDK 成员", "title": "工程师", "mobile": "13900002222", "gender": "female",
            "email": "sdk.writer@example.cn", "en_name": "SDK Writer", "employee_no": "SDK001",
            "departments": [dept_key], "active": True}
    check({k: u[k] for k in want} == want, f"user/create: the fields sent are in the org ({u})")
    check(u["wecom"]["department"] == [dept_id] and u["wecom"]["status"] == 4,
          "user/create: department ids, status 4 (not yet joined)")
    g = c.user.get(uid)
    check(g["name"] == "SDK 成员" and g["position"] == "工程师" and g["department"] == [dept_id]
          and g["mobile"] == "13900002222", "user/get reads the member back")
    check([x["userid"] for x in c.user.list(dept_id)] == [uid], "user/list of the new department")
    check([x["userid"] for x in c.department.get_users(dept_id)] == [uid],
          "user/simplelist of the new department")

    c.user.update(uid, position="经理", department=[dept_id, 1], email="sdk.w2@example.cn")
    u = user_by_id(uid)
    check(u["title"] == "经理" and u["email"] == "sdk.w2@example.cn", f"user/update: position, email changed ({u})")
    check(u["departments"] == [dept_key, root["key"]] and u["wecom"]["department"] == [dept_id, 1],
          "user/update: now in two departments")
    check(u["name"] == "SDK 成员" and u["mobile"] == "13900002222" and u["employee_no"] == "SDK001",
          "user/update: fields not sent are unchanged")
    check(uid in {x["userid"] for x in c.user.list(1)}, "user/list of the root lists the member")
    c.user.update(uid, enable=0)
    u = user_by_id(uid)
    check(u["active"] is False and u["wecom"]["status"] == 2, "user/update enable=0: disabled (status 2)")

    # Deletes: the member, then the (now empty) department.
    expect_error(lambda: c.department.delete(dept_id), code, 60005,
                 "department/delete with a member refused")
    check(dept_by_id(dept_id) is not None, "the refused delete left the department")
    c.user.delete(uid)
    check(user_by_id(uid) is None, "user/delete: the member is gone from the org")
    expect_error(lambda: c.user.get(uid), code, 60111, "user/get of the deleted member")
    c.department.delete(dept_id)
    check(dept_by_id(dept_id) is None, "department/delete: the department is gone from the org")
    expect_error(lambda: c.department.get(dept_id), code, 60123, "department/list?id= of the deleted department")


def crypto_checks(a):
    cr = WeChatCrypto(a.token, a.aes_key, a.corp_id)
    with open(a.events) as f:
        deliveries = json.load(f)
    seen = []
    for d in deliveries:
        q = d["query"]
        plain = cr.decrypt_message(d["body"], q["msg_signature"], q["timestamp"], q["nonce"])
        msg = xmltodict.parse(to_text(plain))["xml"]
        check(msg["ToUserName"] == a.corp_id and msg["FromUserName"] == "sys",
              f"sandbox callback decrypted: {msg['ChangeType']}")
        seen.append(msg)
    check([m["ChangeType"] for m in seen] == ["create_user", "update_user"], "change types")
    check(seen[0]["UserID"] == "sdk1" and seen[0]["Name"] == "控制台", "create_user fields")
    check(seen[1]["Name"] == "控制台2", "update_user fields")
    try:
        q = deliveries[0]["query"]
        cr.decrypt_message(deliveries[0]["body"], "0" * 40, q["timestamp"], q["nonce"])
        check(False, "tampered signature raises")
    except InvalidSignatureException:
        check(True, "tampered signature refused by wechatpy")

    # Callbacks produced by wechatpy, sent to huitong's receiver.
    ts, nonce = str(int(time.time())), "461056294"
    echo_plain = "5927782489442352469"
    echostr = to_text(PrpCrypto(cr.key).encrypt(echo_plain, a.corp_id))
    s = WeChatSigner()
    s.add_data(a.token, ts, nonce, echostr)
    r = requests.get(a.hub, params={"msg_signature": s.signature, "timestamp": ts,
                                    "nonce": nonce, "echostr": echostr}, timeout=10)
    check(r.status_code == 200 and r.text == echo_plain, "receiver answers URL verification with the bare plaintext")
    r = requests.get(a.hub, params={"msg_signature": "0" * 40, "timestamp": ts,
                                    "nonce": nonce, "echostr": echostr}, timeout=10)
    check(r.status_code == 401, "receiver refuses a bad URL-verification signature")

    event_xml = (
        "<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[u0]]></FromUserName>"
        "<CreateTime>%s</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        "<Content><![CDATA[from wechatpy]]></Content><MsgId>%s</MsgId><AgentID>%s</AgentID></xml>"
    ) % (a.corp_id, ts, "7000000000000000001", a.agent_id)
    out = xmltodict.parse(cr.encrypt_message(event_xml, nonce, ts))["xml"]
    body = ("<xml><ToUserName><![CDATA[%s]]></ToUserName><Encrypt><![CDATA[%s]]></Encrypt>"
            "<AgentID><![CDATA[%s]]></AgentID></xml>") % (a.corp_id, out["Encrypt"], a.agent_id)
    params = {"msg_signature": out["MsgSignature"], "timestamp": ts, "nonce": nonce}
    r = requests.post(a.hub, params=params, data=body.encode(), timeout=10)
    check(r.status_code == 200, "receiver accepts a wechatpy-encrypted message")
    r = requests.post(a.hub, params=params, data=body.encode(), timeout=10)
    check(r.status_code == 200, "receiver acknowledges the replay (de-duplicated)")
    change = (
        "<xml><ToUserName><![CDATA[%s]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>"
        "<CreateTime>%s</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[change_contact]]></Event><ChangeType><![CDATA[update_party]]></ChangeType>"
        "<Id>2</Id><ParentId>1</ParentId></xml>"
    ) % (a.corp_id, ts)
    out = xmltodict.parse(cr.encrypt_message(change, "99", ts))["xml"]
    body = "<xml><ToUserName><![CDATA[%s]]></ToUserName><Encrypt><![CDATA[%s]]></Encrypt></xml>" % (
        a.corp_id, out["Encrypt"])
    params = {"msg_signature": out["MsgSignature"], "timestamp": ts, "nonce": "99"}
    r = requests.post(a.hub, params=params, data=body.encode(), timeout=10)
    check(r.status_code == 200, "receiver accepts a wechatpy-encrypted change_contact event")
    params["msg_signature"] = "1" * 40
    r = requests.post(a.hub, params=params, data=body.encode(), timeout=10)
    check(r.status_code == 401, "receiver refuses a bad event signature")
    other = WeChatCrypto(a.token, a.aes_key, "wwSOMEOTHERCORP")
    out = xmltodict.parse(other.encrypt_message(change, "98", ts))["xml"]
    body = "<xml><ToUserName><![CDATA[x]]></ToUserName><Encrypt><![CDATA[%s]]></Encrypt></xml>" % out["Encrypt"]
    r = requests.post(a.hub, params={"msg_signature": out["MsgSignature"], "timestamp": ts, "nonce": "98"},
                      data=body.encode(), timeout=10)
    check(r.status_code == 400, "receiver refuses a callback for another corp")


def main():
    a = parse_args("base", "corp-id", "secret", "token", "aes-key", "events", "hub", "agent-id",
                   ints=("agent-id",))
    contact_write_checks(a, api_checks(a))
    crypto_checks(a)
    print("ALL SDK CHECKS PASSED")


if __name__ == "__main__":
    main()
