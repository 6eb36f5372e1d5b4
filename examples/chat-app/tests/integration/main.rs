//! Integration tests: the real `wasp-chat` binary, spoken to over WebSockets.

mod chat;
mod cluster;
mod common;
mod redis;
