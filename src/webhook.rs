//! A webhook as Volt reports it from `registerWebhook`, and as the store records it.

/// Ids and times are Volt's own, kept as opaque strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub created_at: Option<String>,
    pub last_updated_at: Option<String>,
}
