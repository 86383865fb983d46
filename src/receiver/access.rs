//! Who may post to the webhook listener: optional `[server] allow_ips`, with the client
//! address taken from `X-Forwarded-For` only when the connection comes from a trusted proxy
//! (anyone can write that header, so it means nothing from anyone else).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};
use ipnet::IpNet;

use crate::log_limit::LogLimiter;
use crate::ops::metrics::{Metrics, Rejection};

/// The address a request really came from, as far as can be trusted; stored in the request
/// extensions for the receiver to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

pub struct AccessPolicy {
    allow: Vec<IpNet>,
    trusted_proxies: Vec<IpNet>,
    metrics: Arc<Metrics>,
    warnings: LogLimiter,
}

impl AccessPolicy {
    pub fn new(allow: Vec<IpNet>, trusted_proxies: Vec<IpNet>, metrics: Arc<Metrics>) -> Self {
        Self {
            allow,
            trusted_proxies,
            metrics,
            warnings: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    /// The client address: the peer, or, when the peer is a trusted proxy, the right-most
    /// `X-Forwarded-For` entry that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let Some(header) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for hop in header.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.is_trusted(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }
}

/// Middleware: record the client address, refuse addresses outside `allow_ips` with 403.
pub async fn enforce(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let policy = request.app_data::<web::Data<AccessPolicy>>().cloned();
    let (Some(policy), Some(peer)) = (policy, request.peer_addr()) else {
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let forwarded_for = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let client = policy.client_ip(peer.ip(), forwarded_for);
    request.extensions_mut().insert(ClientIp(client));
    if policy.allows(client) {
        return next
            .call(request)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    }
    policy.metrics.rejected(Rejection::address);
    if let Some(suppressed) = policy.warnings.permit() {
        tracing::warn!(client = %client, suppressed, "Refused a request from an address outside server.allow_ips");
    }
    let response = HttpResponse::Forbidden().json(super::Answer::Error {
        error: "forbidden".to_owned(),
    });
    Ok(request.into_response(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], trusted: &[&str]) -> AccessPolicy {
        let nets = |list: &[&str]| list.iter().map(|s| s.parse().unwrap()).collect();
        AccessPolicy::new(nets(allow), nets(trusted), Metrics::new())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let p = policy(&[], &["10.0.0.0/8"]);
        assert_eq!(
            p.client_ip(ip("203.0.113.9"), Some("198.51.100.1")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn right_most_untrusted_hop_is_the_client() {
        let p = policy(&[], &["10.0.0.0/8", "127.0.0.1/32"]);
        let header = "1.1.1.1, 198.51.100.7, 10.1.2.3";
        assert_eq!(
            p.client_ip(ip("127.0.0.1"), Some(header)),
            ip("198.51.100.7")
        );
        assert_eq!(
            p.client_ip(ip("127.0.0.1"), Some("garbage")),
            ip("127.0.0.1")
        );
        assert_eq!(p.client_ip(ip("127.0.0.1"), None), ip("127.0.0.1"));
    }

    #[test]
    fn empty_allow_list_allows_everyone() {
        assert!(policy(&[], &[]).allows(ip("192.0.2.1")));
        let p = policy(&["192.0.2.0/24", "::1/128"], &[]);
        assert!(p.allows(ip("192.0.2.200")));
        assert!(p.allows(ip("::1")));
        assert!(!p.allows(ip("198.51.100.1")));
    }
}
