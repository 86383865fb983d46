//! Volt's GraphQL API, as far as voltd uses it: the `registerWebhook` mutation.

mod client;
mod registration;
pub mod signature;

pub use client::{VoltClient, VoltError, Webhook};
pub use registration::{RetryPolicy, register_with_retry};
