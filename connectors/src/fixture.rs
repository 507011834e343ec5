//! The vendor-neutral org fixture format (`tests/fixtures/README.md`) that seeds every sandbox.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixtureDepartment {
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub order: i64,
    #[serde(default)]
    pub leaders: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixtureUser {
    pub key: String,
    pub name: String,
    #[serde(default)]
    pub en_name: String,
    #[serde(default)]
    pub email: String,
    /// 11-digit CN mobile, no country code.
    #[serde(default)]
    pub mobile: String,
    #[serde(default)]
    pub employee_no: String,
    #[serde(default)]
    pub title: String,
    /// Department keys, the first is the main one.
    #[serde(default)]
    pub departments: Vec<String>,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub gender: String,
    /// YYYY-MM-DD
    #[serde(default)]
    pub hired_at: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OrgFixture {
    pub departments: Vec<FixtureDepartment>,
    pub users: Vec<FixtureUser>,
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("invalid org fixture: {0}")]
    Invalid(String),
}

/// Largest org fixture read (a 100,000-person org is about 40 MB).
pub const MAX_FIXTURE_BYTES: u64 = 1024 * 1024 * 1024;

impl OrgFixture {
    pub fn load(path: &Path) -> Result<Self, FixtureError> {
        let p = path.display().to_string();
        let text =
            huitong_mappings::mapping::read_capped(path, MAX_FIXTURE_BYTES).map_err(|source| {
                FixtureError::Io {
                    path: p.clone(),
                    source,
                }
            })?;
        let org: Self = serde_json::from_slice(&text)
            .map_err(|source| FixtureError::Parse { path: p, source })?;
        org.validate()?;
        Ok(org)
    }

    pub fn from_json(text: &str) -> Result<Self, FixtureError> {
        let org: Self = serde_json::from_str(text).map_err(|source| FixtureError::Parse {
            path: "<string>".into(),
            source,
        })?;
        org.validate()?;
        Ok(org)
    }

    /// Unique keys, exactly one root, parents / leaders / memberships that exist.
    pub fn validate(&self) -> Result<(), FixtureError> {
        let bad = |m: String| Err(FixtureError::Invalid(m));
        let mut dkeys = HashSet::new();
        for d in &self.departments {
            if !dkeys.insert(d.key.as_str()) {
                return bad(format!("duplicate department key {}", d.key));
            }
        }
        let roots = self
            .departments
            .iter()
            .filter(|d| d.parent.is_none())
            .count();
        if roots != 1 {
            return bad(format!(
                "expected exactly one root department, found {roots}"
            ));
        }
        let mut ukeys = HashSet::new();
        for u in &self.users {
            if !ukeys.insert(u.key.as_str()) {
                return bad(format!("duplicate user key {}", u.key));
            }
            for d in &u.departments {
                if !dkeys.contains(d.as_str()) {
                    return bad(format!("user {} in unknown department {d}", u.key));
                }
            }
        }
        for d in &self.departments {
            if let Some(p) = &d.parent
                && !dkeys.contains(p.as_str())
            {
                return bad(format!("department {} has unknown parent {p}", d.key));
            }
            for l in &d.leaders {
                if !ukeys.contains(l.as_str()) {
                    return bad(format!("department {} has unknown leader {l}", d.key));
                }
            }
        }
        Ok(())
    }

    pub fn root(&self) -> Option<&FixtureDepartment> {
        self.departments.iter().find(|d| d.parent.is_none())
    }

    /// The fixture as JSON with a trailing newline: indented by one space up to 200 users
    /// (readable, diffable), compact above that.
    pub fn to_json(&self) -> String {
        let mut out = Vec::new();
        if self.users.len() <= 200 {
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            self.serialize(&mut ser)
                .expect("an org fixture always serializes");
        } else {
            serde_json::to_writer(&mut out, self).expect("an org fixture always serializes");
        }
        out.push(b'\n');
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

/// What [`generate`] makes: `users` users in `departments` departments (by default
/// max(3, users / 20); at least 1, the root), drawn from `seed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenOptions {
    pub users: usize,
    pub departments: Option<usize>,
    pub seed: u64,
}

impl Default for GenOptions {
    fn default() -> Self {
        Self {
            users: 20,
            departments: None,
            seed: 7,
        }
    }
}

impl GenOptions {
    /// The number of departments [`generate`] makes.
    pub fn department_count(&self) -> usize {
        self.departments
            .unwrap_or_else(|| (self.users / 20).max(3))
            .max(1)
    }
}

/// The most users [`generate`] can give distinct mobiles: 4 prefixes × 10⁹ numbers.
pub const MAX_GENERATED_USERS: u64 = 4 * MOBILE_BLOCK;
const MOBILE_BLOCK: u64 = 1_000_000_000;

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and the same sequence everywhere.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform enough in `0..n` (multiply-high; n > 0).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// True with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: usize) -> bool {
        self.below(1000) < per_mille
    }
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A keyed permutation of `0..MAX_GENERATED_USERS`: a 4-round Feistel network on 32 bits,
/// cycle-walked back into range. Distinct indices give distinct numbers, so mobiles never
/// collide however many users there are.
struct MobilePermutation([u64; 4]);

impl MobilePermutation {
    fn new(seed: u64) -> Self {
        let mut r = SplitMix64(seed ^ 0x6D6F_6269_6C65_2121);
        Self([r.next(), r.next(), r.next(), r.next()])
    }

    fn feistel(&self, x: u32) -> u32 {
        let (mut l, mut r) = ((x >> 16) as u16, x as u16);
        for k in self.0 {
            let f = mix64(u64::from(r) ^ k) as u16;
            (l, r) = (r, l ^ f);
        }
        (u32::from(l) << 16) | u32::from(r)
    }

    fn apply(&self, i: u64) -> u64 {
        debug_assert!(i < MAX_GENERATED_USERS);
        let mut x = i as u32;
        loop {
            x = self.feistel(x);
            if u64::from(x) < MAX_GENERATED_USERS {
                return u64::from(x);
            }
        }
    }

    /// 11 digits: 13/15/17/18 and nine more.
    fn mobile(&self, i: usize) -> String {
        let p = self.apply(i as u64);
        let prefix = ["13", "15", "17", "18"][(p / MOBILE_BLOCK) as usize];
        format!("{prefix}{:09}", p % MOBILE_BLOCK)
    }
}

/// How far below the root [`generate`] goes: 7 levels in all, well within the vendors' limits
/// (WeCom allows 15) and about what real orgs have.
const MAX_DEPTH: usize = 6;

const FIRST_LEVEL: [&str; 12] = [
    "销售部",
    "研发部",
    "采购部",
    "财务部",
    "人力资源部",
    "市场部",
    "生产部",
    "质量部",
    "物流部",
    "客服部",
    "行政部",
    "法务部",
];

/// Deeper units; each is suffixed with its department's index, which keeps names unique.
const TEAMS: [&str; 18] = [
    "华东区",
    "华南区",
    "华北区",
    "西南区",
    "西北区",
    "东北区",
    "一组",
    "二组",
    "三组",
    "平台组",
    "测试组",
    "运维组",
    "渠道组",
    "大客户组",
    "仓储组",
    "项目组",
    "综合组",
    "创新组",
];

/// (surname, pinyin)
const SURNAMES: [(&str, &str); 48] = [
    ("王", "Wang"),
    ("李", "Li"),
    ("张", "Zhang"),
    ("刘", "Liu"),
    ("陈", "Chen"),
    ("杨", "Yang"),
    ("黄", "Huang"),
    ("赵", "Zhao"),
    ("吴", "Wu"),
    ("周", "Zhou"),
    ("徐", "Xu"),
    ("孙", "Sun"),
    ("马", "Ma"),
    ("朱", "Zhu"),
    ("胡", "Hu"),
    ("郭", "Guo"),
    ("何", "He"),
    ("高", "Gao"),
    ("林", "Lin"),
    ("罗", "Luo"),
    ("郑", "Zheng"),
    ("梁", "Liang"),
    ("谢", "Xie"),
    ("宋", "Song"),
    ("唐", "Tang"),
    ("韩", "Han"),
    ("冯", "Feng"),
    ("邓", "Deng"),
    ("曹", "Cao"),
    ("彭", "Peng"),
    ("曾", "Zeng"),
    ("田", "Tian"),
    ("董", "Dong"),
    ("潘", "Pan"),
    ("袁", "Yuan"),
    ("蔡", "Cai"),
    ("蒋", "Jiang"),
    ("余", "Yu"),
    ("杜", "Du"),
    ("叶", "Ye"),
    ("程", "Cheng"),
    ("魏", "Wei"),
    ("苏", "Su"),
    ("吕", "Lv"),
    ("丁", "Ding"),
    ("任", "Ren"),
    ("沈", "Shen"),
    ("欧阳", "Ouyang"),
];

/// (character, pinyin)
const GIVEN_MALE: [(&str, &str); 32] = [
    ("伟", "wei"),
    ("强", "qiang"),
    ("磊", "lei"),
    ("军", "jun"),
    ("洋", "yang"),
    ("勇", "yong"),
    ("杰", "jie"),
    ("涛", "tao"),
    ("明", "ming"),
    ("超", "chao"),
    ("刚", "gang"),
    ("平", "ping"),
    ("辉", "hui"),
    ("鹏", "peng"),
    ("华", "hua"),
    ("飞", "fei"),
    ("鑫", "xin"),
    ("波", "bo"),
    ("斌", "bin"),
    ("宇", "yu"),
    ("浩", "hao"),
    ("凯", "kai"),
    ("健", "jian"),
    ("俊", "jun"),
    ("帆", "fan"),
    ("旭", "xu"),
    ("龙", "long"),
    ("毅", "yi"),
    ("晨", "chen"),
    ("博", "bo"),
    ("志", "zhi"),
    ("海", "hai"),
];

const GIVEN_FEMALE: [(&str, &str); 32] = [
    ("芳", "fang"),
    ("娜", "na"),
    ("敏", "min"),
    ("静", "jing"),
    ("丽", "li"),
    ("艳", "yan"),
    ("娟", "juan"),
    ("霞", "xia"),
    ("秀", "xiu"),
    ("英", "ying"),
    ("慧", "hui"),
    ("婷", "ting"),
    ("雪", "xue"),
    ("琳", "lin"),
    ("玲", "ling"),
    ("萍", "ping"),
    ("红", "hong"),
    ("燕", "yan"),
    ("佳", "jia"),
    ("欣", "xin"),
    ("怡", "yi"),
    ("倩", "qian"),
    ("晶", "jing"),
    ("颖", "ying"),
    ("洁", "jie"),
    ("蓉", "rong"),
    ("梅", "mei"),
    ("兰", "lan"),
    ("雨", "yu"),
    ("瑶", "yao"),
    ("思", "si"),
    ("晓", "xiao"),
];

const TITLES: [&str; 20] = [
    "专员",
    "主管",
    "经理",
    "总监",
    "工程师",
    "高级工程师",
    "会计",
    "出纳",
    "销售代表",
    "采购员",
    "助理",
    "产品经理",
    "设计师",
    "测试工程师",
    "运维工程师",
    "行政专员",
    "人事专员",
    "客服专员",
    "分析师",
    "顾问",
];

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A deterministic org: the same options give the same fixture (and the same
/// [`OrgFixture::to_json`] bytes) on every platform, and it always passes
/// [`OrgFixture::validate`].
///
/// `d0` 总部 is the root; the next departments (up to 12) are first-level units under it,
/// the rest are teams and regions under random earlier non-root departments (at most
/// 6 levels below the root). Users `u0`…
/// get a main department drawn uniformly (about 5 % a second one too, about 2 % are
/// inactive), and each department's leader is the first user whose main department it is.
///
/// # Panics
/// If `opts.users` exceeds [`MAX_GENERATED_USERS`].
pub fn generate(opts: &GenOptions) -> OrgFixture {
    assert!(
        opts.users as u64 <= MAX_GENERATED_USERS,
        "at most {MAX_GENERATED_USERS} users can have distinct mobiles"
    );
    let n_depts = opts.department_count();
    let mut rng = SplitMix64(opts.seed);

    let mut departments = Vec::with_capacity(n_depts);
    departments.push(FixtureDepartment {
        key: "d0".into(),
        name: "总部".into(),
        parent: None,
        order: 0,
        leaders: Vec::new(),
    });
    // Parent index and depth (root 0) of each department so far.
    let mut parents = vec![0usize];
    let mut depths = vec![0usize];
    for i in 1..n_depts {
        let (name, parent) = if i <= FIRST_LEVEL.len() {
            (FIRST_LEVEL[i - 1].to_owned(), 0)
        } else {
            let mut parent = 1 + rng.below(i - 1);
            while depths[parent] >= MAX_DEPTH {
                parent = parents[parent];
            }
            (format!("{}{i}", rng.pick(&TEAMS)), parent)
        };
        parents.push(parent);
        depths.push(depths[parent] + 1);
        departments.push(FixtureDepartment {
            key: format!("d{i}"),
            name,
            parent: Some(format!("d{parent}")),
            order: i as i64,
            leaders: Vec::new(),
        });
    }

    let mobiles = MobilePermutation::new(opts.seed);
    let mut users = Vec::with_capacity(opts.users);
    for i in 0..opts.users {
        let (surname, surname_py) = *rng.pick(&SURNAMES);
        let female = rng.chance(500);
        let given_pool = if female { &GIVEN_FEMALE } else { &GIVEN_MALE };
        let mut given = String::new();
        let mut given_py = String::new();
        for _ in 0..1 + rng.below(2) {
            let (c, py) = *rng.pick(given_pool);
            given.push_str(c);
            given_py.push_str(py);
        }
        let latin = format!("{}{given_py}", surname_py.to_lowercase());
        let mut given_cap = given_py.clone();
        given_cap[..1].make_ascii_uppercase();
        let main = rng.below(n_depts);
        let mut member_of = vec![format!("d{main}")];
        if n_depts > 1 && rng.chance(50) {
            let other = rng.below(n_depts - 1);
            let other = if other >= main { other + 1 } else { other };
            member_of.push(format!("d{other}"));
        }
        let year = 2005 + rng.below(20) as u32;
        let month = 1 + rng.below(12) as u32;
        let day = 1 + rng.below(days_in_month(year, month) as usize) as u32;
        users.push(FixtureUser {
            key: format!("u{i}"),
            name: format!("{surname}{given}"),
            en_name: format!("{surname_py} {given_cap} {i}"),
            email: format!("{latin}.{i}@example.cn"),
            mobile: mobiles.mobile(i),
            employee_no: format!("E{i:06}"),
            title: (*rng.pick(&TITLES)).to_owned(),
            departments: member_of,
            active: !rng.chance(20),
            gender: if female { "female" } else { "male" }.into(),
            hired_at: format!("{year:04}-{month:02}-{day:02}"),
        });
        if departments[main].leaders.is_empty() {
            departments[main].leaders.push(format!("u{i}"));
        }
    }
    OrgFixture { departments, users }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_shared_fixtures() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let small = OrgFixture::load(&dir.join("small-org.json")).unwrap();
        assert_eq!(small.users.len(), 20);
        assert_eq!(small.departments.len(), 3);
        let medium = OrgFixture::load(&dir.join("medium-org.json")).unwrap();
        assert_eq!(medium.users.len(), 300);
        assert_eq!(medium.departments.len(), 25);
        assert!(medium.root().is_some());
    }

    #[test]
    fn rejects_broken_fixtures() {
        let two_roots = r#"{"departments":[{"key":"a","name":"A","parent":null},{"key":"b","name":"B","parent":null}],"users":[]}"#;
        assert!(matches!(
            OrgFixture::from_json(two_roots),
            Err(FixtureError::Invalid(_))
        ));
        let unknown = r#"{"departments":[{"key":"a","name":"A","parent":null}],"users":[{"key":"u","name":"U","departments":["zz"]}]}"#;
        assert!(matches!(
            OrgFixture::from_json(unknown),
            Err(FixtureError::Invalid(_))
        ));
    }

    fn opts(users: usize, departments: Option<usize>, seed: u64) -> GenOptions {
        GenOptions {
            users,
            departments,
            seed,
        }
    }

    #[test]
    fn generated_fixture_is_deterministic_per_seed() {
        let a = generate(&opts(300, Some(40), 11)).to_json();
        let b = generate(&opts(300, Some(40), 11)).to_json();
        assert_eq!(a, b);
        assert_ne!(a, generate(&opts(300, Some(40), 12)).to_json());
        // Pretty at ≤ 200 users, compact above; always one trailing newline.
        let small = generate(&opts(20, None, 7)).to_json();
        assert!(small.starts_with("{\n \"departments\": [\n"), "{small}");
        assert!(small.ends_with("}\n") && !small.ends_with("\n\n"));
        assert_eq!(a.lines().count(), 1);
        assert!(a.ends_with("}\n"));
        // The JSON reads back as the same fixture.
        assert_eq!(
            OrgFixture::from_json(&small).unwrap(),
            generate(&opts(20, None, 7))
        );
    }

    #[test]
    fn generated_fixtures_validate_and_match_their_options() {
        for (users, depts, want_depts) in [
            (0, None, 3),
            (1, None, 3),
            (20, None, 3),
            (100, None, 5),
            (1000, Some(50), 50),
            (500, Some(1), 1),
            (7, Some(0), 1),
        ] {
            let org = generate(&opts(users, depts, 5));
            org.validate()
                .unwrap_or_else(|e| panic!("{users} users / {depts:?}: {e}"));
            assert_eq!(org.users.len(), users);
            assert_eq!(org.departments.len(), want_depts);
            assert_eq!(
                org.root().map(|d| (d.key.as_str(), d.name.as_str())),
                Some(("d0", "总部"))
            );
            let names: HashSet<_> = org.departments.iter().map(|d| &d.name).collect();
            assert_eq!(
                names.len(),
                org.departments.len(),
                "department names are unique"
            );
            for u in &org.users {
                assert!(!u.departments.is_empty() && u.departments.len() <= 2);
                if let [a, b] = u.departments.as_slice() {
                    assert_ne!(a, b);
                }
                assert!(u.gender == "male" || u.gender == "female");
                let idx = &u.key[1..];
                assert_eq!(
                    u.employee_no,
                    format!("E{:06}", idx.parse::<usize>().unwrap())
                );
                assert!(
                    u.email.ends_with(&format!(".{idx}@example.cn")),
                    "{}",
                    u.email
                );
                assert!(u.en_name.ends_with(&format!(" {idx}")), "{}", u.en_name);
                let (y, m, d) = (&u.hired_at[..4], &u.hired_at[5..7], &u.hired_at[8..]);
                let (y, m, d): (u32, u32, u32) =
                    (y.parse().unwrap(), m.parse().unwrap(), d.parse().unwrap());
                assert!(
                    (1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m),
                    "{}",
                    u.hired_at
                );
            }
        }
    }

    #[test]
    fn generated_tree_has_first_level_units_and_deeper_teams() {
        let org = generate(&opts(1000, Some(50), 9));
        let first: Vec<_> = org
            .departments
            .iter()
            .filter(|d| d.parent.as_deref() == Some("d0"))
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(first, FIRST_LEVEL);
        assert!(
            org.departments[13..]
                .iter()
                .all(|d| d.parent.as_deref() != Some("d0"))
        );
        // Deep, but never deeper than MAX_DEPTH below the root, even with many departments.
        let big = generate(&opts(0, Some(5000), 9));
        let parent: std::collections::HashMap<_, _> = big
            .departments
            .iter()
            .map(|d| (d.key.as_str(), d.parent.as_deref()))
            .collect();
        let deepest = big
            .departments
            .iter()
            .map(|d| {
                let (mut k, mut n) = (d.key.as_str(), 0);
                while let Some(p) = parent[k] {
                    (k, n) = (p, n + 1);
                }
                n
            })
            .max();
        assert_eq!(deepest, Some(MAX_DEPTH));
        let inactive = org.users.iter().filter(|u| !u.active).count();
        let two = org
            .users
            .iter()
            .filter(|u| u.departments.len() == 2)
            .count();
        assert!((5..=40).contains(&inactive), "{inactive} inactive of 1000");
        assert!((25..=80).contains(&two), "{two} of 1000 in two departments");
    }

    #[test]
    fn generated_emails_and_mobiles_are_unique() {
        let org = generate(&opts(20_000, None, 1));
        let emails: HashSet<_> = org.users.iter().map(|u| u.email.as_str()).collect();
        let mobiles: HashSet<_> = org.users.iter().map(|u| u.mobile.as_str()).collect();
        assert_eq!(emails.len(), 20_000);
        assert_eq!(mobiles.len(), 20_000);
        for m in &mobiles {
            assert_eq!(m.len(), 11, "{m}");
            assert!(m.bytes().all(|b| b.is_ascii_digit()), "{m}");
            assert!(["13", "15", "17", "18"].contains(&&m[..2]), "{m}");
        }
    }

    #[test]
    fn generated_leaders_are_the_first_main_members() {
        let org = generate(&opts(1000, Some(50), 3));
        for d in &org.departments {
            let first = org.users.iter().find(|u| u.departments[0] == d.key);
            match first {
                None => assert!(d.leaders.is_empty(), "{} has no members", d.key),
                Some(u) => {
                    assert_eq!(d.leaders, vec![u.key.clone()]);
                    assert!(u.departments.contains(&d.key));
                }
            }
        }
        // With more departments than users, some stay without a leader.
        let sparse = generate(&opts(5, Some(40), 3));
        sparse.validate().unwrap();
        assert!(sparse.departments.iter().any(|d| d.leaders.is_empty()));
    }
}
