//! Domain built-ins shared by the compiled fast path and the jaq fallback:
//! phone numbers (E.164) and time conversions.

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

/// A phone numbering region known to `phone(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// ISO 3166 code, e.g. "CN".
    pub code: &'static str,
    /// Country calling code, e.g. "86".
    pub calling_code: &'static str,
    /// Length of a national mobile number, when fixed (CN: 11).
    pub mobile_len: Option<usize>,
}

const REGIONS: &[Region] = &[
    Region {
        code: "CN",
        calling_code: "86",
        mobile_len: Some(11),
    },
    Region {
        code: "HK",
        calling_code: "852",
        mobile_len: Some(8),
    },
    Region {
        code: "MO",
        calling_code: "853",
        mobile_len: Some(8),
    },
    Region {
        code: "TW",
        calling_code: "886",
        mobile_len: None,
    },
    Region {
        code: "SG",
        calling_code: "65",
        mobile_len: Some(8),
    },
    Region {
        code: "JP",
        calling_code: "81",
        mobile_len: None,
    },
    Region {
        code: "KR",
        calling_code: "82",
        mobile_len: None,
    },
    Region {
        code: "US",
        calling_code: "1",
        mobile_len: Some(10),
    },
    Region {
        code: "CA",
        calling_code: "1",
        mobile_len: Some(10),
    },
    Region {
        code: "GB",
        calling_code: "44",
        mobile_len: None,
    },
    Region {
        code: "DE",
        calling_code: "49",
        mobile_len: None,
    },
    Region {
        code: "FR",
        calling_code: "33",
        mobile_len: None,
    },
    Region {
        code: "AU",
        calling_code: "61",
        mobile_len: None,
    },
];

/// Looks up a region by ISO code (case-insensitive).
pub fn region(code: &str) -> Result<Region, String> {
    REGIONS
        .iter()
        .find(|r| r.code.eq_ignore_ascii_case(code))
        .copied()
        .ok_or_else(|| {
            let known: Vec<&str> = REGIONS.iter().map(|r| r.code).collect();
            format!(
                "unknown phone region {code:?} (known: {})",
                known.join(", ")
            )
        })
}

/// Parses a time zone name such as "Asia/Shanghai" or "UTC".
pub fn time_zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("unknown time zone {name:?} (use an IANA name such as \"Asia/Shanghai\")")
    })
}

fn describe(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        let mut end = 57;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

/// Normalises a phone number to E.164 (`+8613800000000`).
///
/// Accepts `13800000000`, `+86 138-0000-0000`, `0086…`, `+86-13800000000`, `(0)…`; numbers that
/// already carry a `+` keep their country code. A number is rejected if it has letters, too few
/// or too many digits (E.164 allows at most 15), or a wrong length for the region's mobiles.
pub fn phone(v: &Value, region: Region) -> Result<Value, String> {
    let raw = match v {
        Value::Null => return Ok(Value::Null),
        Value::String(s) => s.as_str(),
        Value::Number(n) => return phone(&Value::String(n.to_string()), region),
        other => return Err(format!("phone: expected a string, got {}", describe(other))),
    };
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(Value::Null);
    }
    let mut digits = String::with_capacity(trimmed.len() + 4);
    let mut plus = false;
    for (i, c) in trimmed.chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if i == 0 => plus = true,
            ' ' | '-' | '(' | ')' | '.' | '\u{a0}' => {}
            _ => return Err(format!("phone: {raw:?} contains {c:?}")),
        }
    }
    let international = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_owned()
    } else {
        let national = if region.calling_code == "86" || region.calling_code == "1" {
            digits.as_str()
        } else {
            digits.strip_prefix('0').unwrap_or(&digits)
        };
        if let Some(len) = region.mobile_len
            && region.code == "CN"
            && national.starts_with('1')
            && national.len() != len
        {
            return Err(format!(
                "phone: {raw:?} is not a valid {} mobile number ({} digits, expected {len})",
                region.code,
                national.len()
            ));
        }
        if region.code == "CN"
            && national.len() == 13
            && national.starts_with("86")
            && national[2..].starts_with('1')
        {
            // "8613800000000": country code written without '+'.
            national.to_owned()
        } else {
            format!("{}{}", region.calling_code, national)
        }
    };
    if international.starts_with('0') || !(8..=15).contains(&international.len()) {
        return Err(format!(
            "phone: {raw:?} is not a valid international number (+{international})"
        ));
    }
    if let Some(national) = international.strip_prefix("86")
        && national.starts_with('1')
        && national.len() != 11
    {
        return Err(format!(
            "phone: {raw:?} is not a valid CN mobile number ({} digits, expected 11)",
            national.len()
        ));
    }
    Ok(Value::String(format!("+{international}")))
}

/// Formats an E.164 number for a vendor that stores national numbers for its home region:
/// `+8613800000000` → `13800000000` for region CN; numbers of other countries keep `+`.
pub fn phone_national(v: &Value, region: Region) -> Result<Value, String> {
    let e164 = phone(v, region)?;
    Ok(match e164 {
        Value::String(s) => match s
            .strip_prefix('+')
            .and_then(|d| d.strip_prefix(region.calling_code))
        {
            Some(national) => Value::String(national.to_owned()),
            None => Value::String(s),
        },
        other => other,
    })
}

/// Reads an integer epoch from a number or a numeric string (Feishu sends ms as strings).
fn epoch_int(v: &Value, what: &str) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                Ok(Some(f as i64))
            } else {
                Err(format!("{what}: {n} is not an integer epoch"))
            }
        }
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map(Some)
            .map_err(|_| format!("{what}: {s:?} is not an integer epoch")),
        other => Err(format!(
            "{what}: expected an epoch number, got {}",
            describe(other)
        )),
    }
}

fn from_millis(ms: i64, what: &str) -> Result<DateTime<Utc>, String> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .ok_or_else(|| format!("{what}: {ms} is out of range"))
}

/// Epoch milliseconds → RFC 3339 in `tz` (`2024-03-01T08:00:00+08:00`; milliseconds kept when
/// not zero).
pub fn from_epoch_ms(v: &Value, tz: Tz) -> Result<Value, String> {
    let Some(ms) = epoch_int(v, "from_epoch_ms")? else {
        return Ok(Value::Null);
    };
    let t = from_millis(ms, "from_epoch_ms")?.with_timezone(&tz);
    let fmt = if ms.rem_euclid(1000) == 0 {
        SecondsFormat::Secs
    } else {
        SecondsFormat::Millis
    };
    Ok(Value::String(t.to_rfc3339_opts(fmt, false)))
}

/// Epoch seconds → RFC 3339 in `tz`.
pub fn from_epoch_s(v: &Value, tz: Tz) -> Result<Value, String> {
    let Some(s) = epoch_int(v, "from_epoch_s")? else {
        return Ok(Value::Null);
    };
    let ms = s
        .checked_mul(1000)
        .ok_or_else(|| format!("from_epoch_s: {s} is out of range"))?;
    from_epoch_ms(&Value::from(ms), tz)
}

fn parse_rfc3339(v: &Value, what: &str) -> Result<Option<DateTime<chrono::FixedOffset>>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => DateTime::parse_from_rfc3339(s.trim())
            .map(Some)
            .map_err(|e| format!("{what}: {s:?} is not an RFC 3339 time ({e})")),
        other => Err(format!(
            "{what}: expected an RFC 3339 string, got {}",
            describe(other)
        )),
    }
}

/// RFC 3339 → epoch milliseconds.
pub fn to_epoch_ms(v: &Value) -> Result<Value, String> {
    Ok(parse_rfc3339(v, "to_epoch_ms")?.map_or(Value::Null, |t| Value::from(t.timestamp_millis())))
}

/// RFC 3339 → epoch seconds (fractions are truncated).
pub fn to_epoch_s(v: &Value) -> Result<Value, String> {
    Ok(parse_rfc3339(v, "to_epoch_s")?.map_or(Value::Null, |t| Value::from(t.timestamp())))
}

/// Epoch milliseconds → calendar date (`YYYY-MM-DD`) in `tz`.
pub fn epoch_ms_to_date(v: &Value, tz: Tz) -> Result<Value, String> {
    let Some(ms) = epoch_int(v, "epoch_ms_to_date")? else {
        return Ok(Value::Null);
    };
    let t = from_millis(ms, "epoch_ms_to_date")?.with_timezone(&tz);
    Ok(Value::String(t.format("%Y-%m-%d").to_string()))
}

/// Epoch seconds → calendar date in `tz`.
pub fn epoch_s_to_date(v: &Value, tz: Tz) -> Result<Value, String> {
    let Some(s) = epoch_int(v, "epoch_s_to_date")? else {
        return Ok(Value::Null);
    };
    let ms = s
        .checked_mul(1000)
        .ok_or_else(|| format!("epoch_s_to_date: {s} is out of range"))?;
    epoch_ms_to_date(&Value::from(ms), tz)
}

fn date_midnight(v: &Value, tz: Tz, what: &str) -> Result<Option<i64>, String> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim(),
        other => {
            return Err(format!(
                "{what}: expected a YYYY-MM-DD string, got {}",
                describe(other)
            ));
        }
    };
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| format!("{what}: {s:?} is not a YYYY-MM-DD date ({e})"))?;
    let midnight = d
        .and_hms_opt(0, 0, 0)
        .ok_or_else(|| format!("{what}: {s:?} has no midnight"))?;
    let t = tz
        .from_local_datetime(&midnight)
        .earliest()
        .ok_or_else(|| format!("{what}: {s:?} midnight does not exist in {tz}"))?;
    Ok(Some(t.timestamp_millis()))
}

/// Calendar date → epoch milliseconds of its midnight in `tz`.
pub fn date_to_epoch_ms(v: &Value, tz: Tz) -> Result<Value, String> {
    Ok(date_midnight(v, tz, "date_to_epoch_ms")?.map_or(Value::Null, Value::from))
}

/// Calendar date → epoch seconds of its midnight in `tz`.
pub fn date_to_epoch_s(v: &Value, tz: Tz) -> Result<Value, String> {
    Ok(date_midnight(v, tz, "date_to_epoch_s")?.map_or(Value::Null, |ms| Value::from(ms / 1000)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cn() -> Region {
        region("cn").expect("CN is known")
    }

    #[test]
    fn phone_normalises_common_cn_spellings() {
        for raw in [
            "13800000000",
            "+8613800000000",
            "+86-13800000000",
            "+86 138 0000 0000",
            "008613800000000",
            "8613800000000",
        ] {
            assert_eq!(
                phone(&json!(raw), cn()),
                Ok(json!("+8613800000000")),
                "{raw}"
            );
        }
        assert_eq!(
            phone(&json!("+85291234567"), cn()),
            Ok(json!("+85291234567"))
        );
        assert_eq!(phone(&json!(null), cn()), Ok(json!(null)));
        assert_eq!(phone(&json!(""), cn()), Ok(json!(null)));
    }

    #[test]
    fn phone_rejects_garbage_with_a_reason() {
        let e = phone(&json!("1380000000"), cn()).unwrap_err();
        assert!(e.contains("expected 11"), "{e}");
        assert!(
            phone(&json!("138abc00000"), cn())
                .unwrap_err()
                .contains("'a'")
        );
        assert!(phone(&json!("+8612"), cn()).is_err());
        assert!(phone(&json!({"a": 1}), cn()).is_err());
        assert!(region("XX").unwrap_err().contains("known"));
    }

    #[test]
    fn phone_national_strips_only_the_home_code() {
        assert_eq!(
            phone_national(&json!("+8613800000000"), cn()),
            Ok(json!("13800000000"))
        );
        assert_eq!(
            phone_national(&json!("+85291234567"), cn()),
            Ok(json!("+85291234567"))
        );
    }

    #[test]
    fn epoch_conversions_respect_the_zone() {
        let sh = time_zone("Asia/Shanghai").expect("zone");
        // 2024-02-29T16:00:00Z is 2024-03-01 00:00 in Shanghai.
        let ms = json!(1_709_222_400_000_i64);
        assert_eq!(epoch_ms_to_date(&ms, sh), Ok(json!("2024-03-01")));
        assert_eq!(
            epoch_ms_to_date(&ms, chrono_tz::UTC),
            Ok(json!("2024-02-29"))
        );
        assert_eq!(date_to_epoch_ms(&json!("2024-03-01"), sh), Ok(ms.clone()));
        assert_eq!(
            from_epoch_ms(&ms, sh),
            Ok(json!("2024-03-01T00:00:00+08:00"))
        );
        assert_eq!(
            from_epoch_ms(&json!("1709222400123"), sh),
            Ok(json!("2024-03-01T00:00:00.123+08:00"))
        );
        assert_eq!(to_epoch_ms(&json!("2024-03-01T00:00:00+08:00")), Ok(ms));
        assert_eq!(
            from_epoch_s(&json!(1_709_222_400), chrono_tz::UTC),
            Ok(json!("2024-02-29T16:00:00+00:00"))
        );
        assert_eq!(
            to_epoch_s(&json!("2024-02-29T16:00:00Z")),
            Ok(json!(1_709_222_400))
        );
        assert_eq!(
            epoch_s_to_date(&json!(1_709_222_400), sh),
            Ok(json!("2024-03-01"))
        );
        assert_eq!(
            date_to_epoch_s(&json!("2024-03-01"), sh),
            Ok(json!(1_709_222_400))
        );
        assert!(
            to_epoch_ms(&json!("yesterday"))
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(date_to_epoch_ms(&json!("2024-13-01"), sh).is_err());
        assert!(time_zone("Mars/Olympus").is_err());
    }
}
