//! What the vendor sandboxes' modules use, glob-imported (`use crate::sandbox::prelude::*;`).

pub(crate) use std::collections::HashMap;
pub(crate) use std::sync::{Arc, Mutex};
pub(crate) use std::time::Duration;

pub(crate) use axum::extract::{Query, Request, State};
pub(crate) use axum::http::{HeaderMap, HeaderValue, StatusCode};
pub(crate) use axum::middleware::Next;
pub(crate) use axum::response::{IntoResponse, Response};
pub(crate) use axum::routing::{get, post};
pub(crate) use axum::{Json, Router};
pub(crate) use secrecy::{ExposeSecret, SecretString};
pub(crate) use serde_json::{Map, Value, json};
pub(crate) use tokio::time::Instant;

pub(crate) use super::kit::{
    FaultReplies, Reissue, blank_user, credentials, endpoint_of, json_object, matched_path,
    or_reply, query_param, str_list, str_or_empty, wxbiz_crypt,
};
pub(crate) use super::{
    Added, AdminError, AdminHandle, Changed, CommonOptions, Console, ConsoleOrg, EncodedEvent,
    EventEncoder, RateWindow, SandboxCore, SandboxError, admin_router, lock,
};
pub(crate) use crate::fixture::{FixtureDepartment, FixtureUser, OrgFixture};
