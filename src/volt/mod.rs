//! Volt's GraphQL API, as far as voltd uses it: the `registerWebhook` mutation, the policy
//! around it, and the signature Volt puts on each webhook.

mod client;
pub mod registration;
pub mod signature;
pub mod token;

pub use client::{VoltAnswer, VoltClient, VoltError, VoltSaid};
