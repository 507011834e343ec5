//! Supplier webhooks (`[hooks.NAME]`, `POST /hooks/{source}`): signatures verified on the raw
//! body ([`verify`]).

pub mod verify;
