//! The jobs a schedule can fire.
//!
//! A job is written in a schedule file as one line: a kind followed by its arguments, e.g.
//! `reconcile org`. Only `reconcile <route>` exists today; the enum is `#[non_exhaustive]`
//! so that `poll <route>` and `dlq-replay [queue]` can be added without breaking callers.
//! To add a kind: add a variant, a row to [`JOB_KINDS`], and an arm in [`Job::parse`] and
//! [`Job::kind`].

use std::fmt;

/// The job kinds this version understands (shown in error messages).
pub const JOB_KINDS: &[&str] = &["reconcile <route>"];

/// One job a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Job {
    /// Full reconcile (plan + apply) of a route.
    Reconcile {
        /// The route name, as in the hub's route configuration.
        route: String,
    },
}

/// Why a job line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobParseError {
    /// Nothing was written.
    #[error("the job is empty; expected one of: {}", JOB_KINDS.join(", "))]
    Empty,
    /// The first word is not a known job kind.
    #[error("unknown job kind `{kind}`; expected one of: {}", JOB_KINDS.join(", "))]
    UnknownKind {
        /// The word that was found.
        kind: String,
    },
    /// The kind is known but the arguments are wrong.
    #[error("`{kind}` {problem}; usage: `{usage}`")]
    BadArguments {
        /// The job kind.
        kind: &'static str,
        /// What is wrong.
        problem: String,
        /// The expected form.
        usage: &'static str,
    },
}

impl Job {
    /// Parses a job line such as `reconcile org`.
    pub fn parse(text: &str) -> Result<Job, JobParseError> {
        let mut words = text.split_whitespace();
        let Some(kind) = words.next() else {
            return Err(JobParseError::Empty);
        };
        let args: Vec<&str> = words.collect();
        match kind {
            "reconcile" => {
                let usage = "reconcile <route>";
                match args.as_slice() {
                    [route] => {
                        check_name("reconcile", usage, "route", route)?;
                        Ok(Job::Reconcile {
                            route: (*route).to_owned(),
                        })
                    }
                    [] => Err(JobParseError::BadArguments {
                        kind: "reconcile",
                        problem: "needs a route name".to_owned(),
                        usage,
                    }),
                    _ => Err(JobParseError::BadArguments {
                        kind: "reconcile",
                        problem: format!("takes exactly one route, got {}", args.len()),
                        usage,
                    }),
                }
            }
            other => Err(JobParseError::UnknownKind {
                kind: other.to_owned(),
            }),
        }
    }

    /// The job kind, e.g. `reconcile`.
    pub fn kind(&self) -> &'static str {
        match self {
            Job::Reconcile { .. } => "reconcile",
        }
    }

    /// The route the job works on, if it has one (so `config check` can verify it exists).
    pub fn route(&self) -> Option<&str> {
        match self {
            Job::Reconcile { route } => Some(route),
        }
    }
}

impl fmt::Display for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Job::Reconcile { route } => write!(f, "reconcile {route}"),
        }
    }
}

impl std::str::FromStr for Job {
    type Err = JobParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Job::parse(s)
    }
}

fn check_name(
    kind: &'static str,
    usage: &'static str,
    what: &str,
    value: &str,
) -> Result<(), JobParseError> {
    if value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Ok(())
    } else {
        Err(JobParseError::BadArguments {
            kind,
            problem: format!(
                "{what} `{value}` may only contain ASCII letters, digits, `-`, `_` and `.`"
            ),
            usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reconcile() {
        assert_eq!(
            Job::parse("  reconcile   org "),
            Ok(Job::Reconcile {
                route: "org".to_owned()
            })
        );
        assert_eq!(
            Job::parse("reconcile org").map(|j| j.to_string()),
            Ok("reconcile org".to_owned())
        );
    }

    #[test]
    fn rejects_unknown_and_malformed_jobs() {
        assert!(
            matches!(Job::parse("poll org"), Err(JobParseError::UnknownKind { kind }) if kind == "poll")
        );
        assert_eq!(Job::parse("   "), Err(JobParseError::Empty));
        assert!(matches!(
            Job::parse("reconcile"),
            Err(JobParseError::BadArguments { .. })
        ));
        assert!(matches!(
            Job::parse("reconcile a b"),
            Err(JobParseError::BadArguments { .. })
        ));
        assert!(matches!(
            Job::parse("reconcile a/b"),
            Err(JobParseError::BadArguments { .. })
        ));
    }
}
