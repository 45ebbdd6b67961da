//! Notifications out (issue 14): subscriptions deliver matching events to HTTPS endpoints.
//!
//! Why here: registry-registry holds what delivery needs and no other service should —
//! the vault that seals the signing secrets (one data key per subscription, destroyed when
//! the subscription is removed, like a registry's), the network guard every outbound
//! request passes, and admin authentication.
//!
//! How it fits together:
//! - [`api`]: `POST/GET/DELETE /v1/subscriptions`, dead letters and replay. Commands become
//!   `subscription.*` events (the secret sealed) and are applied before the call returns.
//! - [`delivery`]: a durable consumer of the whole stream (`registry-registry-delivery`;
//!   of the `subscription.*` events alone while none is live)
//!   puts every event a subscription wants into a PostgreSQL outbox, in the transaction
//!   that records its position, so a restart neither loses nor repeats a row; one
//!   dispatcher per subscription sends them (CloudEvents HTTP binding, structured mode,
//!   Standard Webhooks signature), retries on a schedule of hours, and moves what never
//!   went through to the subscription's dead-letter list. A dispatcher's queue, in-flight
//!   bound and timeouts are its own, so a failing endpoint never slows another.
//! - [`store`]: the subscriptions projection, the outbox, dead letters and replays.
//!
//! This module: configuration, type patterns and the signing secret.

pub mod api;
pub mod commands;
pub mod delivery;
pub mod store;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The durable consumer that fills the outbox; also the `stream_position` row.
pub const DELIVERY_CONSUMER: &str = "registry-registry-delivery";

/// The field name binding a subscription's secret in the vault (its AAD).
pub(crate) const SECRET_FIELD: &str = "subscription_secret";

/// The default retry schedule: the delays after the 1st, 2nd, … failed attempt (about 16
/// hours in all, 10 attempts), each with ±20 % jitter.
pub const DEFAULT_RETRY_SCHEDULE: &str = "5s,30s,2m,10m,30m,1h,2h,4h,8h";

/// Delivery settings, flattened into the service's [`crate::config::Config`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct DeliveryConfig {
    /// `IMAGELIB_SUBSCRIPTIONS_ALLOW_HTTP` (default false): accept `http://` subscription
    /// URLs (tests, a receiver on the same host). HTTPS otherwise.
    pub subscriptions_allow_http: bool,
    /// `IMAGELIB_SUBSCRIPTIONS_RETRY_SCHEDULE`: the delays between attempts, comma-separated
    /// durations (`500ms`, `5s`, `2m`, `1h`); after the last one fails the event is
    /// dead-lettered. Default [`DEFAULT_RETRY_SCHEDULE`].
    pub subscriptions_retry_schedule: Option<RetrySchedule>,
    /// `IMAGELIB_SUBSCRIPTIONS_TIMEOUT_SECS` (default 10): each delivery's timeout, body
    /// included.
    pub subscriptions_timeout_secs: Option<u64>,
    /// `IMAGELIB_SUBSCRIPTIONS_MAX_IN_FLIGHT` (default 8): requests in flight per
    /// subscription (never two of one subject).
    pub subscriptions_max_in_flight: Option<usize>,
}

impl DeliveryConfig {
    pub fn schedule(&self) -> RetrySchedule {
        self.subscriptions_retry_schedule
            .clone()
            .unwrap_or_default()
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.subscriptions_timeout_secs.unwrap_or(10).clamp(1, 120))
    }

    pub fn max_in_flight(&self) -> usize {
        self.subscriptions_max_in_flight.unwrap_or(8).clamp(1, 64)
    }
}

/// Delays between delivery attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl Default for RetrySchedule {
    fn default() -> Self {
        DEFAULT_RETRY_SCHEDULE
            .parse()
            .unwrap_or_else(|_| RetrySchedule(vec![Duration::from_secs(5)]))
    }
}

impl RetrySchedule {
    pub fn new(delays: Vec<Duration>) -> Self {
        RetrySchedule(delays)
    }

    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// Attempts in all: the first plus one per delay.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.0.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The delay after the `failed`-th failed attempt (1-based), with ±20 % jitter, or
    /// `None` when the schedule is spent.
    pub fn after(&self, failed: u32) -> Option<Duration> {
        let base = *self.0.get(usize::try_from(failed).ok()?.checked_sub(1)?)?;
        let jitter = rand::random_range(0.8..1.2);
        Some(base.mul_f64(jitter))
    }
}

/// `500ms`, `5s`, `2m`, `1h`, or bare seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (500ms, 5s, 2m, 1h)"))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("`{s}` is not a duration (500ms, 5s, 2m, 1h)")),
    };
    if d.is_zero() || d > Duration::from_secs(7 * 24 * 3600) {
        return Err(format!("`{s}`: a delay is between 1ms and 7 days"));
    }
    Ok(d)
}

impl std::str::FromStr for RetrySchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let delays = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(parse_duration)
            .collect::<Result<Vec<_>, _>>()?;
        if delays.len() > 30 {
            return Err("at most 30 delays".into());
        }
        Ok(RetrySchedule(delays))
    }
}

impl std::fmt::Display for RetrySchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|d| {
                if d.subsec_millis() != 0 || d.as_secs() == 0 {
                    format!("{}ms", d.as_millis())
                } else {
                    format!("{}s", d.as_secs())
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Serialize for RetrySchedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RetrySchedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// A string of durations, bare seconds, or a list of either (TOML).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(u64),
            List(Vec<Item>),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Item {
            Text(String),
            Seconds(u64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Seconds(n) => n.to_string(),
            Raw::List(items) => items
                .into_iter()
                .map(|i| match i {
                    Item::Text(s) => s,
                    Item::Seconds(n) => n.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------- type patterns

/// At most this many patterns per subscription.
pub const MAX_PATTERNS: usize = 32;
/// At most this long, each.
pub const MAX_PATTERN_LEN: usize = 128;

/// Whether the CloudEvent type `ty` matches `pattern`, where `*` is any run of characters
/// (none included) and everything else is literal.
pub fn type_matches(pattern: &str, ty: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), ty.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and where in `ty` its run would end next.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Checks a subscription's `types`: 1 to [`MAX_PATTERNS`] patterns of letters, digits,
/// `.`, `_`, `-` and `*`, each matching at least one event type of the contract (a typo
/// would otherwise subscribe to nothing, silently). Duplicates are dropped. `Err` is
/// (JSON pointer, message).
pub fn check_types(types: &[String]) -> Result<Vec<String>, (String, String)> {
    if types.is_empty() {
        return Err((
            "/types".into(),
            "at least one CloudEvent type pattern, e.g. `io.imagelib.image.*` or `*`".into(),
        ));
    }
    if types.len() > MAX_PATTERNS {
        return Err(("/types".into(), format!("at most {MAX_PATTERNS} patterns")));
    }
    let mut out: Vec<String> = Vec::with_capacity(types.len());
    for (i, t) in types.iter().enumerate() {
        let pointer = format!("/types/{i}");
        let t = t.trim();
        if t.is_empty() || t.len() > MAX_PATTERN_LEN {
            return Err((pointer, format!("1 to {MAX_PATTERN_LEN} characters")));
        }
        if let Some(c) = t
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*')))
        {
            return Err((
                pointer,
                format!(
                    "`{c}` is not allowed: letters, digits, `.`, `_`, `-` and the wildcard `*`"
                ),
            ));
        }
        if !imagelib_events::EventPayload::TYPES
            .iter()
            .any(|et| type_matches(t, et.type_name))
        {
            return Err((
                pointer,
                format!(
                    "`{t}` matches no event type (types look like `io.imagelib.image.tag_mutated.v1`; \
                     `*` matches any run of characters)"
                ),
            ));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    Ok(out)
}

/// Whether any of `patterns` matches `ty`.
pub fn wants(patterns: &[String], ty: &str) -> bool {
    patterns.iter().any(|p| type_matches(p, ty))
}

// ---------------------------------------------------------------- the signing secret

/// The prefix of a secret in the Standard Webhooks format (`whsec_<base64 key>`).
pub const SECRET_PREFIX: &str = "whsec_";

/// A new secret: `whsec_` and 32 random bytes in base64, the form Standard Webhooks
/// libraries take.
pub fn generate_secret() -> SecretString {
    let bytes: SecretBox<[u8; 32]> = SecretBox::new(Box::new(rand::random()));
    SecretString::from(format!(
        "{SECRET_PREFIX}{}",
        STANDARD.encode(bytes.expose_secret())
    ))
}

/// The HMAC key of a secret: for `whsec_<base64>` the decoded bytes (as Standard Webhooks
/// does), otherwise the secret's own bytes.
#[derive(Clone)]
pub struct SigningKey(std::sync::Arc<SecretBox<Vec<u8>>>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

/// Why a secret is refused; never quotes it.
pub fn check_secret(secret: &str) -> Result<(), String> {
    SigningKey::from_secret(secret).map(|_| ())
}

impl SigningKey {
    pub fn from_secret(secret: &str) -> Result<Self, String> {
        let bytes = match secret.strip_prefix(SECRET_PREFIX) {
            Some(b64) => {
                let key = STANDARD.decode(b64.trim()).map_err(|_| {
                    "a `whsec_` secret is `whsec_` and base64 (the Standard Webhooks format)"
                        .to_owned()
                })?;
                if !(24..=64).contains(&key.len()) {
                    return Err("a `whsec_` secret holds 24 to 64 bytes of key".into());
                }
                key
            }
            None => {
                if !(32..=256).contains(&secret.len()) {
                    return Err(
                        "a secret is 32 to 256 characters, or `whsec_` and a base64 key (omit it to have one generated)"
                            .into(),
                    );
                }
                if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err("a secret has no whitespace or control characters".into());
                }
                secret.as_bytes().to_vec()
            }
        };
        Ok(SigningKey(std::sync::Arc::new(SecretBox::new(Box::new(
            bytes,
        )))))
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, the `webhook-signature`
    /// value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose_secret());
        // HMAC takes keys of any length; the error arm cannot happen.
        let Ok(mut mac) = mac else {
            return String::new();
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_runs_of_characters() {
        for (p, t) in [
            ("*", "io.imagelib.image.tag_mutated.v1"),
            ("io.imagelib.image.*", "io.imagelib.image.tag_mutated.v1"),
            ("*.tag_mutated.v1", "io.imagelib.image.tag_mutated.v1"),
            ("io.*.tag_*.v1", "io.imagelib.image.tag_moved.v1"),
            (
                "io.imagelib.image.tag_moved.v1",
                "io.imagelib.image.tag_moved.v1",
            ),
            (
                "io.imagelib.image.tag_moved.v1*",
                "io.imagelib.image.tag_moved.v1",
            ),
        ] {
            assert!(type_matches(p, t), "{p} ~ {t}");
        }
        for (p, t) in [
            ("io.imagelib.image.", "io.imagelib.image.tag_moved.v1"),
            ("*.v2", "io.imagelib.image.tag_moved.v1"),
            ("io.imagelib.registry.*", "io.imagelib.image.tag_moved.v1"),
            ("", "x"),
        ] {
            assert!(!type_matches(p, t), "{p} !~ {t}");
        }
    }

    #[test]
    fn patterns_are_checked_against_the_contract() {
        assert_eq!(
            check_types(&["*".into(), "*".into()]).unwrap(),
            vec!["*".to_owned()]
        );
        assert!(check_types(&["io.imagelib.image.*".into()]).is_ok());
        assert_eq!(check_types(&[]).unwrap_err().0, "/types");
        assert_eq!(
            check_types(&["*".into(), "io.imagelib.imgae.*".into()])
                .unwrap_err()
                .0,
            "/types/1"
        );
        assert!(check_types(&["io imagelib".into()]).is_err());
        assert!(check_types(&vec!["*".to_owned(); MAX_PATTERNS + 1]).is_err());
    }

    #[test]
    fn schedules_parse_and_print() {
        let s: RetrySchedule = "100ms, 2s,1m,1h".parse().unwrap();
        assert_eq!(
            s.delays(),
            [
                Duration::from_millis(100),
                Duration::from_secs(2),
                Duration::from_secs(60),
                Duration::from_secs(3600)
            ]
        );
        assert_eq!(s.to_string(), "100ms,2s,60s,3600s");
        assert_eq!(s.attempts(), 5);
        assert!(s.after(0).is_none());
        assert!(s.after(5).is_none());
        let d = s.after(2).unwrap();
        assert!(d >= Duration::from_millis(1600) && d <= Duration::from_millis(2400));
        assert!("5x".parse::<RetrySchedule>().is_err());
        assert!("0s".parse::<RetrySchedule>().is_err());
        assert_eq!(RetrySchedule::default().attempts(), 10);
    }

    #[test]
    fn the_configuration_reads_as_the_environment_gives_it() {
        let c: crate::config::Config = serde_json::from_value(serde_json::json!({
            "subscriptions_allow_http": true,
            "subscriptions_retry_schedule": "100ms,1s,2m",
            "subscriptions_timeout_secs": 3,
            "subscriptions_max_in_flight": 500,
        }))
        .unwrap();
        assert!(c.delivery.subscriptions_allow_http);
        assert_eq!(c.delivery.schedule().attempts(), 4);
        assert_eq!(c.delivery.timeout(), Duration::from_secs(3));
        assert_eq!(c.delivery.max_in_flight(), 64, "bounded");
        let c: crate::config::Config =
            serde_json::from_value(serde_json::json!({"subscriptions_retry_schedule": 30}))
                .unwrap();
        assert_eq!(c.delivery.schedule().delays(), [Duration::from_secs(30)]);
        let d = crate::config::Config::default().delivery;
        assert!(!d.subscriptions_allow_http);
        assert_eq!(d.schedule(), RetrySchedule::default());
        assert_eq!(d.timeout(), Duration::from_secs(10));
        assert!(
            serde_json::from_value::<crate::config::Config>(
                serde_json::json!({"subscriptions_retry_schedule": "soon"})
            )
            .is_err()
        );
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification's reference libraries.
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let secret = generate_secret();
        assert!(secret.expose_secret().starts_with(SECRET_PREFIX));
        assert!(check_secret(secret.expose_secret()).is_ok());
        assert!(check_secret("short").is_err());
        assert!(check_secret("whsec_!!!").is_err());
        assert!(
            format!(
                "{:?}",
                SigningKey::from_secret(secret.expose_secret()).unwrap()
            )
            .contains("***")
        );
    }
}
