//! huitong schedules: schedule files, the cron scheduler engine and the `schedule list` view.
//!
//! * [`load_dir`] reads and validates the schedule files (every problem reported).
//! * [`Scheduler`] fires the jobs through the hub's [`JobRunner`], claiming each fire in the
//!   hub's [`FireStore`] so that several processes fire it once.
//! * [`list_schedules`] + [`render_table`] / [`render_json`] make `huitong schedule list`.
//!
//! Storage and job execution live in the hub behind the two traits; this crate knows no
//! database.
//!
//! ```no_run
//! use std::sync::Arc;
//! use huitong_schedules::*;
//!
//! struct Hub;
//! #[async_trait::async_trait]
//! impl JobRunner for Hub {
//!     async fn run(&self, _schedule: &str, job: &Job, _fire: chrono::DateTime<chrono::Utc>)
//!         -> Result<JobOutcome, String> {
//!         match job {
//!             Job::Reconcile { route } => Ok(JobOutcome { summary: Some(format!("{route}: 0 changes")) }),
//!             _ => Err(format!("job `{job}` not supported by this hub")),
//!         }
//!     }
//! }
//!
//! async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//!     let set = load_dir(std::path::Path::new("schedules/files"))?; // LoadError lists every problem
//!     for w in &set.warnings { eprintln!("{w}"); }
//!     let store = Arc::new(MemoryFireStore::new()); // the hub: its SQL store
//!     metrics::describe();
//!     let handle = Scheduler::new(
//!         set.schedules.clone(), Arc::new(Hub), store.clone(), Arc::new(SystemClock),
//!         SchedulerConfig::new("host-a:4242:1764482400"),
//!     ).start();
//!     // `huitong schedule list`:
//!     let views = list_schedules(&set.schedules, store.as_ref(), chrono::Utc::now(), 5).await?;
//!     print!("{}", render_table(&views));
//!     handle.shutdown().await; // on Ctrl-C: stop firing, let running jobs finish
//!     Ok(())
//! }
//! ```

mod clock;
mod engine;
mod job;
mod list;
mod load;
pub mod metrics;
mod schedule;
mod store;

pub use clock::{Clock, SystemClock, TokioClock};
pub use engine::{JobOutcome, JobRunner, Scheduler, SchedulerConfig, SchedulerHandle};
pub use job::{JOB_KINDS, Job, JobParseError};
pub use list::{LastFire, ScheduleView, list_schedules, render_json, render_table};
pub use load::{Diagnostic, LoadError, ScheduleSet, Severity, load_dir, load_sources};
pub use schedule::{CronError, DEFAULT_TIMEZONE, MissedPolicy, OverlapPolicy, Schedule};
pub use store::{
    FireOutcome, FireRecord, FireStatus, FireStore, MemoryFireStore, StoreError, UnknownFireStatus,
};
