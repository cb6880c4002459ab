//! The Standard Webhooks conventions (<https://www.standardwebhooks.com/>): signing secrets,
//! signatures, and which URLs a delivery may go to; and the retry schedule.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use rand::{Rng, RngCore};

use crate::config::WebhookSettings;

/// The prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` + standard base64 of 32 random bytes (the Standard Webhooks
/// form; the bytes are the HMAC key).
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` header value for message `id` sent at `timestamp` (Unix seconds) with
/// `body`: `v1,` + base64 of HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with the
/// base64-decoded part of `secret` after `whsec_`. `None` when the secret is not of that form.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .ok()?;
    let mut mac = <Hmac<sha2_hmac::Sha256> as KeyInit>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// Why an endpoint URL is refused (422 `webhook_url_not_allowed`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    #[error("`url` is not an absolute URL: {0}")]
    Malformed(String),
    #[error("`url` is longer than 2048 characters")]
    TooLong,
    #[error(
        "`url` must be https://, or http:// to a host listed in webhooks.allow_http_hosts; not {0}://"
    )]
    Scheme(String),
    #[error(
        "`url` may use http:// only for hosts listed in webhooks.allow_http_hosts; {0} is not one of them, use https://"
    )]
    HttpHost(String),
    #[error("`url` may not carry a user name or password; use the signing secret to authenticate")]
    Credentials,
    #[error(
        "`url` names {0}, an internal address (loopback, private, link-local or reserved); endpoints must be reachable on the internet, or their host listed in webhooks.allow_http_hosts"
    )]
    InternalAddress(String),
}

/// Whether `host` (as written in a URL, lowercase) is one the operator listed in
/// `webhooks.allow_http_hosts`: it may be reached over `http://` and at an internal address.
pub fn host_allowed(host: &str, settings: &WebhookSettings) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    settings
        .allow_http_hosts
        .iter()
        .any(|h| h == host || h.trim_start_matches('[').trim_end_matches(']') == bare)
}

/// Whether `ip` is an address on the public internet: not loopback, private (RFC 1918, IPv6
/// unique local), link-local (which holds cloud metadata services, 169.254.169.254), shared
/// (100.64.0.0/10), unspecified, broadcast, multicast, documentation, benchmarking or reserved
/// (IANA special-purpose registries). A webhook sent to such an address would let a tenant's
/// admin make licensor call services inside its own network (server-side request forgery,
/// OWASP SSRF Prevention Cheat Sheet).
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first == 0x2001 && v6.segments()[1] == 0x0db8)
                || (first == 0x0064 && v6.segments()[1] == 0xff9b))
        }
    }
}

/// Check an endpoint URL: absolute, at most 2,048 characters, no credentials in it, and
/// `https://`, or `http://` to a host listed in `webhooks.allow_http_hosts`; a host written as an
/// IP address must be a public one ([`is_public`]) unless listed there too (a name is checked
/// when a delivery resolves it, see [`super::PublicResolver`]). Returns the URL as parsed
/// (normalised).
pub fn check_url(url: &str, settings: &WebhookSettings) -> Result<reqwest::Url, UrlRefusal> {
    if url.len() > 2048 {
        return Err(UrlRefusal::TooLong);
    }
    let parsed =
        reqwest::Url::parse(url.trim()).map_err(|e| UrlRefusal::Malformed(e.to_string()))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(UrlRefusal::Credentials);
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| UrlRefusal::Malformed("it has no host".into()))?
        .to_ascii_lowercase();
    match parsed.scheme() {
        "https" => {}
        "http" => {
            if !host_allowed(&host, settings) {
                return Err(UrlRefusal::HttpHost(host));
            }
        }
        other => return Err(UrlRefusal::Scheme(other.to_owned())),
    }
    // The parser writes an address in its one standard form (`http://0x7f.1/` is 127.0.0.1).
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .ok();
    if ip.is_some_and(|ip| !is_public(ip)) && !host_allowed(&host, settings) {
        return Err(UrlRefusal::InternalAddress(host));
    }
    if parsed.as_str().len() > 2048 {
        return Err(UrlRefusal::TooLong);
    }
    Ok(parsed)
}

/// Delays before retries, in multiples of `webhooks.retry_base_ms`: with the default 5 s that is
/// 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, then every 2 h.
const SCHEDULE: [u64; 7] = [1, 6, 24, 120, 360, 720, 1440];

/// The delay before the next attempt after `attempts` failed ones of a series (1 = the first
/// attempt failed), jittered by ±20 % so endpoints that failed together are not retried
/// together; `None` when that attempt would fall after the series' window
/// (`webhooks.retry_for_secs` from `elapsed` = time since the series started): then the
/// delivery has failed.
///
/// The schedule is computed from the attempt count stored with the delivery, because one
/// delivery's retries span a day and any number of worker processes.
pub fn retry_delay(
    settings: &WebhookSettings,
    attempts: u32,
    elapsed: Duration,
) -> Option<Duration> {
    let step = (attempts.max(1) - 1) as usize;
    let factor = SCHEDULE[step.min(SCHEDULE.len() - 1)];
    let base = settings.retry_base_ms.saturating_mul(factor) as f64;
    let jitter = rand::rng().random_range(0.8..=1.2);
    let delay = Duration::from_millis((base * jitter) as u64);
    (elapsed + delay <= Duration::from_secs(settings.retry_for_secs)).then_some(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(hosts: &[&str]) -> WebhookSettings {
        WebhookSettings {
            allow_http_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..WebhookSettings::default()
        }
    }

    /// The example of the Standard Webhooks specification (and its reference libraries).
    #[test]
    fn signature_matches_the_specification_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(sign("whsec_not base64!", "x", 1, b"").is_none());
    }

    #[test]
    fn secrets_are_32_random_bytes() {
        let s = new_secret();
        let key = STANDARD
            .decode(s.strip_prefix(SECRET_PREFIX).unwrap())
            .unwrap();
        assert_eq!(key.len(), 32);
        assert_ne!(s, new_secret());
    }

    #[test]
    fn urls_are_https_or_allowed_http() {
        let s = settings(&["127.0.0.1", "localhost", "[::1]"]);
        assert!(check_url("https://example.com/hook", &s).is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook", &s).is_ok());
        assert!(check_url("http://LOCALHOST/hook", &s).is_ok());
        assert!(check_url("http://[::1]:80/x", &s).is_ok());
        assert_eq!(
            check_url("http://example.com/hook", &s),
            Err(UrlRefusal::HttpHost("example.com".into()))
        );
        assert!(matches!(
            check_url("ftp://example.com/x", &s),
            Err(UrlRefusal::Scheme(_))
        ));
        assert!(matches!(
            check_url("not a url", &s),
            Err(UrlRefusal::Malformed(_))
        ));
        assert_eq!(
            check_url("https://user:pw@example.com/", &s),
            Err(UrlRefusal::Credentials)
        );
        let long = format!("https://example.com/{}", "a".repeat(2100));
        assert_eq!(check_url(&long, &s), Err(UrlRefusal::TooLong));
        assert!(check_url("http://127.0.0.1/", &settings(&[])).is_err());
    }

    /// Internal addresses written in the URL are refused unless the operator listed the host
    /// (server-side request forgery: a cloud metadata service at 169.254.169.254, a database on
    /// the private network, licensor's own port on loopback).
    #[test]
    fn internal_addresses_are_refused_unless_listed() {
        let s = settings(&["127.0.0.1", "10.1.2.3"]);
        for url in [
            "https://169.254.169.254/latest/meta-data",
            "https://127.0.0.2/",
            "https://0x7f.0.0.2/",
            "https://2130706434/",
            "https://10.0.0.1/",
            "https://172.16.5.4/",
            "https://192.168.1.1/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[fe80::1]/",
            "https://[fd00::1]/",
            "https://[::ffff:169.254.169.254]/",
            "https://[::ffff:7f00:2]/",
            "https://255.255.255.255/",
            "https://224.0.0.1/",
            "https://240.0.0.1/",
        ] {
            assert!(
                matches!(check_url(url, &s), Err(UrlRefusal::InternalAddress(_))),
                "{url}: {:?}",
                check_url(url, &s)
            );
        }
        for url in [
            "https://127.0.0.1/hook",
            "http://127.0.0.1:8080/hook",
            "https://10.1.2.3/hook",
            "https://8.8.8.8/hook",
            "https://[2606:4700::1111]/hook",
            "https://hooks.example.com/hook",
        ] {
            assert!(
                check_url(url, &s).is_ok(),
                "{url}: {:?}",
                check_url(url, &s)
            );
        }
    }

    #[test]
    fn retries_back_off_within_the_window() {
        let s = WebhookSettings::default();
        let d = |n| retry_delay(&s, n, Duration::ZERO).unwrap().as_secs_f64();
        assert!((4.0..=6.0).contains(&d(1)), "{}", d(1));
        assert!((24.0..=36.0).contains(&d(2)));
        assert!((96.0..=144.0).contains(&d(3)));
        assert!((5760.0..=8640.0).contains(&d(7)));
        assert!((5760.0..=8640.0).contains(&d(30)), "every 2 h after that");
        assert!(retry_delay(&s, 9, Duration::from_secs(86_000)).is_none());
        // The whole schedule: about 18 attempts in the day.
        let (mut elapsed, mut attempts) = (Duration::ZERO, 1);
        while let Some(delay) = retry_delay(&s, attempts, elapsed) {
            elapsed += delay;
            attempts += 1;
        }
        assert!((14..=22).contains(&attempts), "{attempts}");
    }
}
