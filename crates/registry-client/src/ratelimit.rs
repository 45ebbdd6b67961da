//! A registry's announced pull budget (Docker Hub's `ratelimit-limit` /
//! `ratelimit-remaining`, e.g. `100;w=21600`: 100 pulls per 21600 s), and the pacing that
//! keeps a scan from spending it.
//!
//! Every answer of the registry's own host that carries both headers updates the last
//! observation ([`RateLimit`]). While the remaining budget is at or below the reserve
//! ([`crate::RegistryConfig::rate_limit_reserve_percent`] of the limit), manifest `GET`s —
//! what Hub counts; `HEAD`s and blobs are free — are spaced at the window's average rate
//! (`window / limit`); a GET that would have to wait beyond the client's `Retry-After` cap,
//! or any GET once nothing remains, is not sent and fails `rate_limited`, so the scanner
//! defers the repository to its next scan instead of meeting a `429` (and leaving the
//! people who pull images from the same address without a budget).

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderMap;

/// The longest header value looked at; longer is garbage and ignored.
const MAX_HEADER_LEN: usize = 128;
/// Limits above this are not believed.
const MAX_LIMIT: u64 = 1_000_000_000;
/// Windows beyond a week are not believed.
const MAX_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// The window assumed when a limit names none (Docker Hub's: six hours).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(6 * 3600);

/// The last budget a registry announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window.
    pub limit: u64,
    /// Requests left in the current window (as the registry said, minus the GETs sent
    /// since).
    pub remaining: u64,
    /// The window, when the registry named it (`;w=<seconds>`).
    pub window: Option<Duration>,
    /// When the registry said so.
    pub observed_at: SystemTime,
}

impl RateLimit {
    /// The window's average spacing of requests: `window / limit`.
    pub fn interval(&self) -> Duration {
        self.window.unwrap_or(DEFAULT_WINDOW) / u32::try_from(self.limit.max(1)).unwrap_or(u32::MAX)
    }

    /// Whether the remaining budget is at or below `reserve_percent` of the limit.
    pub fn is_low(&self, reserve_percent: u8) -> bool {
        let reserve = self
            .limit
            .saturating_mul(u64::from(reserve_percent.min(100)))
            / 100;
        self.remaining <= reserve
    }
}

/// One header value: `<count>[;w=<seconds>][;other params]`. `None` for anything else.
pub fn parse_value(value: &str) -> Option<(u64, Option<Duration>)> {
    if value.len() > MAX_HEADER_LEN {
        return None;
    }
    let mut parts = value.split(';');
    let count = parts.next()?.trim();
    if count.is_empty() || count.len() > 10 || !count.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let count: u64 = count.parse().ok()?;
    if count > MAX_LIMIT {
        return None;
    }
    let mut window = None;
    for p in parts {
        let Some((k, v)) = p.split_once('=') else {
            continue;
        };
        if k.trim().eq_ignore_ascii_case("w") {
            let v = v.trim();
            if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let secs: u64 = v.parse().ok()?;
            let w = Duration::from_secs(secs);
            if secs == 0 || w > MAX_WINDOW {
                return None;
            }
            window = Some(w);
        }
    }
    Some((count, window))
}

/// The budget announced by an answer's headers, when both are there and sane.
pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<RateLimit> {
    let get = |name: &str| {
        let mut values = headers.get_all(name).iter();
        let first = values.next()?;
        // One value each; repeated headers are not guessed at.
        if values.next().is_some() {
            return None;
        }
        parse_value(first.to_str().ok()?)
    };
    let (limit, window) = get("ratelimit-limit")?;
    let (remaining, remaining_window) = get("ratelimit-remaining")?;
    if limit == 0 || remaining > limit {
        return None;
    }
    Some(RateLimit {
        limit,
        remaining,
        window: window.or(remaining_window),
        observed_at: now,
    })
}

/// What the transport keeps: the last observation and the last paced GET.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    observed: Option<RateLimit>,
    last_get: Option<Instant>,
}

/// What a GET must do before it is sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pace {
    Go,
    Wait(Duration),
    /// Not sent: the budget is spent, or the wait is beyond the cap (how long to wait).
    Refuse(Duration),
}

impl Pacer {
    pub(crate) fn observe(&mut self, rl: RateLimit) {
        self.observed = Some(rl);
    }

    pub(crate) fn last(&self) -> Option<RateLimit> {
        self.observed
    }

    /// Reserves the next counted GET's slot: go at once while the budget is comfortable;
    /// otherwise one GET per interval, never beyond `cap` of waiting, none at zero.
    pub(crate) fn reserve(&mut self, reserve_percent: u8, cap: Duration, now: Instant) -> Pace {
        let Some(rl) = self.observed.as_mut() else {
            return Pace::Go;
        };
        if !rl.is_low(reserve_percent) {
            rl.remaining = rl.remaining.saturating_sub(1);
            return Pace::Go;
        }
        let interval = rl.interval();
        if rl.remaining == 0 {
            return Pace::Refuse(interval);
        }
        let at = self.last_get.map_or(now, |last| (last + interval).max(now));
        let wait = at - now;
        if wait > cap {
            return Pace::Refuse(wait);
        }
        rl.remaining -= 1;
        self.last_get = Some(at);
        if wait.is_zero() {
            Pace::Go
        } else {
            Pace::Wait(wait)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn parses_docker_hubs_form_and_ignores_garbage() {
        assert_eq!(
            parse_value("100;w=21600"),
            Some((100, Some(Duration::from_secs(21600))))
        );
        assert_eq!(parse_value(" 76 "), Some((76, None)));
        assert_eq!(
            parse_value("5;w=60;comment=x"),
            Some((5, Some(Duration::from_secs(60))))
        );
        for bad in [
            "",
            "-1",
            "1e3",
            "100;w=",
            "100;w=-5",
            "100;w=0",
            "100;w=99999999999",
            "99999999999",
            "abc;w=60",
            &"9".repeat(500),
        ] {
            assert_eq!(parse_value(bad), None, "{bad}");
        }
    }

    fn headers(limit: &str, remaining: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("ratelimit-limit", HeaderValue::from_str(limit).unwrap());
        h.insert(
            "ratelimit-remaining",
            HeaderValue::from_str(remaining).unwrap(),
        );
        h
    }

    #[test]
    fn both_headers_or_nothing() {
        let now = SystemTime::now();
        let rl = from_headers(&headers("100;w=21600", "76;w=21600"), now).unwrap();
        assert_eq!((rl.limit, rl.remaining), (100, 76));
        assert_eq!(rl.window, Some(Duration::from_secs(21600)));
        assert_eq!(rl.interval(), Duration::from_secs(216));
        assert!(from_headers(&headers("100", "101"), now).is_none());
        assert!(from_headers(&headers("0", "0"), now).is_none());
        assert!(from_headers(&headers("x", "1"), now).is_none());
        let mut only = HeaderMap::new();
        only.insert("ratelimit-limit", HeaderValue::from_static("100"));
        assert!(from_headers(&only, now).is_none());
        let mut twice = headers("100", "5");
        twice.append("ratelimit-remaining", HeaderValue::from_static("50"));
        assert!(from_headers(&twice, now).is_none());
    }

    #[test]
    fn paces_only_when_low_and_refuses_beyond_the_cap_or_at_zero() {
        let t0 = Instant::now();
        let cap = Duration::from_secs(30);
        let mut p = Pacer::default();
        assert_eq!(p.reserve(20, cap, t0), Pace::Go, "nothing observed");
        p.observe(RateLimit {
            limit: 10,
            remaining: 4,
            window: Some(Duration::from_secs(10)),
            observed_at: SystemTime::now(),
        });
        // 4 > 20 % of 10: free, and counted down locally.
        assert_eq!(p.reserve(20, cap, t0), Pace::Go);
        assert_eq!(p.reserve(20, cap, t0), Pace::Go);
        // 2 left: one GET per second.
        assert_eq!(p.reserve(20, cap, t0), Pace::Go);
        assert_eq!(p.reserve(20, cap, t0), Pace::Wait(Duration::from_secs(1)));
        assert_eq!(p.last().unwrap().remaining, 0);
        assert_eq!(p.reserve(20, cap, t0), Pace::Refuse(Duration::from_secs(1)));
        // A long interval is beyond the cap.
        let mut p = Pacer::default();
        p.observe(RateLimit {
            limit: 100,
            remaining: 3,
            window: Some(Duration::from_secs(21600)),
            observed_at: SystemTime::now(),
        });
        assert_eq!(p.reserve(20, cap, t0), Pace::Go, "the first paced GET goes");
        assert_eq!(
            p.reserve(20, cap, t0),
            Pace::Refuse(Duration::from_secs(216))
        );
    }
}
