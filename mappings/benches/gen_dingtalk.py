#!/usr/bin/env python3
"""Generates DingTalk user records (topapi/v2/user/get `result` shape) as NDJSON, plus the
matching id links for the mapping's xref() lookups.

usage: gen_dingtalk.py N OUT.ndjson XREF.ndjson [--depts M] [--seed S]
"""
import argparse, json, random

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"
TITLES = ["工程师", "高级工程师", "产品经理", "设计师", "销售经理", "会计", "HRBP", "运维工程师", "测试工程师", "总监"]
PLACES = ["杭州", "北京", "上海", "深圳", "成都"]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("out")
    ap.add_argument("xref")
    ap.add_argument("--depts", type=int, default=500)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    dept_ids = [1] + [100000 + i for i in range(1, a.depts)]
    with open(a.xref, "w") as x:
        for d in dept_ids:
            x.write(json.dumps({"entity": "department", "system": "dingtalk", "external_id": str(d), "canonical_id": f"D{d:08d}"}) + "\n")
        for i in range(a.n):
            x.write(json.dumps({"entity": "person", "system": "dingtalk", "external_id": f"u{i:07d}", "canonical_id": f"P{i:08d}"}) + "\n")
    base_ms = 1_420_070_400_000  # 2015-01-01
    with open(a.out, "w") as out:
        for i in range(a.n):
            name = rnd.choice(SURNAMES) + rnd.choice(GIVEN) + (rnd.choice(GIVEN) if rnd.random() < 0.6 else "")
            depts = rnd.sample(dept_ids[1:], k=1 if rnd.random() < 0.8 else 2)
            rec = {
                "userid": f"u{i:07d}",
                "unionid": f"UN{rnd.getrandbits(64):016x}",
                "name": name,
                "avatar": "",
                "state_code": "86",
                "mobile": f"1{rnd.choice('3456789')}{rnd.randrange(10**9):09d}",
                "hide_mobile": False,
                "job_number": f"E{i:06d}",
                "title": rnd.choice(TITLES),
                "org_email": f"User.{i}@Corp.Example.COM",
                "work_place": rnd.choice(PLACES),
                "dept_id_list": depts,
                "leader_in_dept": [{"dept_id": d, "leader": rnd.random() < 0.05} for d in depts],
                "manager_userid": f"u{rnd.randrange(max(1, a.n)):07d}",
                "hired_date": base_ms + rnd.randrange(3650) * 86_400_000,
                "active": True,
                "admin": False,
                "boss": False,
                "senior": False,
                "real_authed": True,
                "exclusive_account": False,
            }
            out.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n")

if __name__ == "__main__":
    main()
