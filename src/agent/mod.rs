//! The update agent: follows an image, takes each update when its rollout
//! wave and its strategy allow, reboots into it, and reports its health.
//! `hostctl agent` runs it as a service; `hostctl agent --once` from a timer.
//!
//! One concept per file:
//! - [`config`]: `agent.toml` and its drop-ins, parsed strictly.
//! - [`strategy`]: maintenance windows (the `periodic` strategy), pure.
//! - [`state`]: the state machine and its crash-safe record.
//! - [`clock`]: the time, behind a trait (fleet tests move it by hand).
//! - [`run`]: the loop that does each phase's work.

pub mod clock;
pub mod config;
pub mod run;
pub mod state;
pub mod strategy;
