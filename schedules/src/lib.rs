//! huitong schedules (filled by later issues).
