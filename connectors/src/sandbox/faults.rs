//! `--faults SPEC`: which faults a sandbox injects, and at what rates.
//!
//! ```text
//! SPEC := ITEM ("," ITEM)*
//! ITEM := "5xx=" RATE                  server error (HTTP 500/503)
//!       | "429=" RATE ["x" BURST]      rate-limit reply; BURST consecutive calls get it (default 1)
//!       | "token=" RATE                the presented access token expires early (vendor's
//!                                      token-invalid code; the caller must refetch)
//!       | "slow=" RATE ["@" DURATION]  delay the reply (default 2s); DURATION like 300ms, 2s
//!       | "lost=" RATE                 the call is carried out but its reply is lost: the
//!                                      caller gets a server error (as from a gateway that
//!                                      timed out after the write committed) and may retry
//!       | "late=" RATE ["@" DURATION]  the call is carried out at once and its reply held
//!                                      back DURATION (default 2s): the caller's write is
//!                                      done while it still waits for the answer
//!       | "seed=" N                    PRNG seed, for reproducible runs (default 1)
//! RATE := a fraction 0..1 ("0.1") or a percentage ("10%")
//! ```
//! Example: `5xx=0.05,429=0.02x5,token=0.01,slow=0.1@500ms`. Faults apply to the vendor API
//! calls, not to the token endpoint nor to `/_sandbox/`.

use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    pub server_error: f64,
    pub rate_limit: f64,
    pub rate_limit_burst: u32,
    pub token_expiry: f64,
    pub slow: f64,
    pub slow_delay: Duration,
    /// Calls carried out whose reply is replaced by a server error.
    pub lost_reply: f64,
    /// Calls carried out whose reply is then held back `late_delay`.
    pub late_reply: f64,
    pub late_delay: Duration,
    pub seed: u64,
}

impl Default for FaultSpec {
    fn default() -> Self {
        Self {
            server_error: 0.0,
            rate_limit: 0.0,
            rate_limit_burst: 1,
            token_expiry: 0.0,
            slow: 0.0,
            slow_delay: Duration::from_secs(2),
            lost_reply: 0.0,
            late_reply: 0.0,
            late_delay: Duration::from_secs(2),
            seed: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad fault spec item {item:?}: {reason}")]
pub struct FaultSpecError {
    pub item: String,
    pub reason: String,
}

fn parse_rate(item: &str, s: &str) -> Result<f64, FaultSpecError> {
    let err = |reason: &str| FaultSpecError {
        item: item.to_string(),
        reason: reason.to_string(),
    };
    let v = if let Some(p) = s.strip_suffix('%') {
        p.trim()
            .parse::<f64>()
            .map_err(|_| err("rate is not a number"))?
            / 100.0
    } else {
        s.trim()
            .parse::<f64>()
            .map_err(|_| err("rate is not a number"))?
    };
    if !(0.0..=1.0).contains(&v) {
        return Err(err("rate must be within 0..1 (or 0%..100%)"));
    }
    Ok(v)
}

/// Parses `300ms`, `2s`, `1.5s`, `1m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| Duration::from_secs_f64(v * mult))
}

impl FaultSpec {
    /// No faults at all.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn parse(spec: &str) -> Result<Self, FaultSpecError> {
        let mut out = Self::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let err = |reason: &str| FaultSpecError {
                item: item.to_string(),
                reason: reason.to_string(),
            };
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| err("expected KEY=VALUE"))?;
            match k.trim() {
                "5xx" => out.server_error = parse_rate(item, v)?,
                "429" => {
                    let (rate, burst) = match v.split_once('x') {
                        Some((r, b)) => (
                            r,
                            b.trim()
                                .parse::<u32>()
                                .ok()
                                .filter(|b| *b >= 1)
                                .ok_or_else(|| err("burst must be a positive integer"))?,
                        ),
                        None => (v, 1),
                    };
                    out.rate_limit = parse_rate(item, rate)?;
                    out.rate_limit_burst = burst;
                }
                "token" => out.token_expiry = parse_rate(item, v)?,
                "lost" => out.lost_reply = parse_rate(item, v)?,
                "slow" | "late" => {
                    let (rate, delay) = match v.split_once('@') {
                        Some((r, d)) => (
                            r,
                            parse_duration(d)
                                .ok_or_else(|| err("bad duration (e.g. 300ms, 2s)"))?,
                        ),
                        None => (v, Duration::from_secs(2)),
                    };
                    if k.trim() == "slow" {
                        out.slow = parse_rate(item, rate)?;
                        out.slow_delay = delay;
                    } else {
                        out.late_reply = parse_rate(item, rate)?;
                        out.late_delay = delay;
                    }
                }
                "seed" => {
                    out.seed = v
                        .trim()
                        .parse()
                        .map_err(|_| err("seed must be an integer"))?;
                }
                _ => {
                    return Err(err(
                        "unknown fault (expected 5xx, 429, token, slow, lost, late, seed)",
                    ));
                }
            }
        }
        Ok(out)
    }

    pub fn is_none(&self) -> bool {
        self.server_error == 0.0
            && self.rate_limit == 0.0
            && self.token_expiry == 0.0
            && self.slow == 0.0
            && self.lost_reply == 0.0
            && self.late_reply == 0.0
    }
}

impl std::str::FromStr for FaultSpec {
    type Err = FaultSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// What to do to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    ServerError,
    RateLimited,
    TokenExpired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultPlan {
    pub delay: Option<Duration>,
    pub fault: Option<Fault>,
    /// Carry the call out, then answer with a server error instead of its reply.
    pub lose_reply: bool,
    /// Carry the call out, then hold its reply back this long.
    pub late_reply: Option<Duration>,
}

struct InjectorState {
    rng: u64,
    burst_left: u32,
}

/// Draws faults from a seeded PRNG (splitmix64), so a sequential run is reproducible.
pub struct FaultInjector {
    spec: FaultSpec,
    state: Mutex<InjectorState>,
}

impl FaultInjector {
    pub fn new(spec: FaultSpec) -> Self {
        let rng = spec.seed;
        Self {
            spec,
            state: Mutex::new(InjectorState { rng, burst_left: 0 }),
        }
    }

    pub fn spec(&self) -> &FaultSpec {
        &self.spec
    }

    /// Decides the fate of one call.
    pub fn plan(&self) -> FaultPlan {
        if self.spec.is_none() {
            return FaultPlan::default();
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut draw = || {
            st.rng = st.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = st.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        };
        let delay = (draw() < self.spec.slow).then_some(self.spec.slow_delay);
        let r_5xx = draw();
        let r_429 = draw();
        let r_tok = draw();
        // Drawn only when asked for: the other faults' sequences stay what they were.
        let r_lost = if self.spec.lost_reply > 0.0 {
            draw()
        } else {
            1.0
        };
        // Drawn last and only when asked for, like `lost`.
        let r_late = if self.spec.late_reply > 0.0 {
            draw()
        } else {
            1.0
        };
        let fault = if st.burst_left > 0 {
            st.burst_left -= 1;
            Some(Fault::RateLimited)
        } else if r_429 < self.spec.rate_limit {
            st.burst_left = self.spec.rate_limit_burst.saturating_sub(1);
            Some(Fault::RateLimited)
        } else if r_5xx < self.spec.server_error {
            Some(Fault::ServerError)
        } else if r_tok < self.spec.token_expiry {
            Some(Fault::TokenExpired)
        } else {
            None
        };
        let lose_reply = fault.is_none() && r_lost < self.spec.lost_reply;
        let late_reply =
            (fault.is_none() && r_late < self.spec.late_reply).then_some(self.spec.late_delay);
        FaultPlan {
            delay,
            fault,
            lose_reply,
            late_reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_spec() {
        let s = FaultSpec::parse(
            "5xx=0.05, 429=2%x5,token=0.01,slow=0.1@300ms,lost=3%,late=4%@1500ms,seed=9",
        )
        .unwrap();
        assert_eq!(s.lost_reply, 0.03);
        assert_eq!(s.late_reply, 0.04);
        assert_eq!(s.late_delay, Duration::from_millis(1500));
        assert!(!FaultSpec::parse("late=1%").unwrap().is_none());
        assert_eq!(
            FaultSpec::parse("late=1%").unwrap().late_delay,
            Duration::from_secs(2)
        );
        assert_eq!(s.server_error, 0.05);
        assert!((s.rate_limit - 0.02).abs() < 1e-12);
        assert_eq!(s.rate_limit_burst, 5);
        assert_eq!(s.token_expiry, 0.01);
        assert_eq!(s.slow, 0.1);
        assert_eq!(s.slow_delay, Duration::from_millis(300));
        assert_eq!(s.seed, 9);
        assert!(FaultSpec::parse("").unwrap().is_none());
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "5xx",
            "5xx=2",
            "429=0.1x0",
            "slow=0.1@fast",
            "late=2",
            "late=0.1@soon",
            "boom=0.1",
            "seed=x",
            "token=-1",
        ] {
            assert!(FaultSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bursts_are_consecutive_and_rates_roughly_hold() {
        let inj = FaultInjector::new(FaultSpec::parse("429=1x3").unwrap());
        for _ in 0..6 {
            assert_eq!(inj.plan().fault, Some(Fault::RateLimited));
        }
        let inj = FaultInjector::new(FaultSpec::parse("5xx=0.25,seed=3").unwrap());
        let n = (0..4000)
            .filter(|_| inj.plan().fault == Some(Fault::ServerError))
            .count();
        assert!((800..1200).contains(&n), "{n}");
        let inj = FaultInjector::new(FaultSpec::parse("429=0.1,5xx=0.1,seed=5").unwrap());
        let plans: Vec<_> = (0..4000).map(|_| inj.plan().fault).collect();
        let n429 = plans
            .iter()
            .filter(|f| **f == Some(Fault::RateLimited))
            .count();
        let n5xx = plans
            .iter()
            .filter(|f| **f == Some(Fault::ServerError))
            .count();
        assert!((300..500).contains(&n429), "{n429}");
        assert!((250..450).contains(&n5xx), "{n5xx}");
        let none = FaultInjector::new(FaultSpec::none());
        assert!((0..100).all(|_| none.plan() == FaultPlan::default()));
    }

    #[test]
    fn same_seed_same_sequence() {
        let a = FaultInjector::new(FaultSpec::parse("5xx=0.3,429=0.2x2,seed=5").unwrap());
        let b = FaultInjector::new(FaultSpec::parse("5xx=0.3,429=0.2x2,seed=5").unwrap());
        let sa: Vec<_> = (0..100).map(|_| a.plan()).collect();
        let sb: Vec<_> = (0..100).map(|_| b.plan()).collect();
        assert_eq!(sa, sb);
    }
}
