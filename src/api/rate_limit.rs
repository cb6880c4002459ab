//! Per-token rate limit (`[api] rate_limit_per_second` / `rate_limit_burst`): a GCRA limiter
//! (governor) keyed by API token id, checked right after a token authenticates. Over the limit →
//! 429 `rate_limited` with `Retry-After`. Routes without a token (health, metrics,
//! `/openapi.json`, the Job Monitor's files) are not limited.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use licensor_core::config::ApiSettings;
use uuid::Uuid;

use super::problem::ApiError;

/// Checks between two sweeps of the limiter's idle entries (revoked or unused tokens).
const SWEEP_EVERY: u64 = 4096;

/// One budget per API token.
pub struct TokenRateLimiter {
    limiter: DefaultKeyedRateLimiter<Uuid>,
    per_second: u32,
    checks: AtomicU64,
}

impl std::fmt::Debug for TokenRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRateLimiter")
            .field("per_second", &self.per_second)
            .finish_non_exhaustive()
    }
}

impl TokenRateLimiter {
    /// The limiter the settings ask for; `None` when `rate_limit_per_second` is 0.
    pub fn from_settings(settings: &ApiSettings) -> Option<TokenRateLimiter> {
        let per_second = NonZeroU32::new(settings.rate_limit_per_second)?;
        let burst = NonZeroU32::new(settings.rate_limit_burst).unwrap_or(per_second);
        Some(TokenRateLimiter {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            per_second: per_second.get(),
            checks: AtomicU64::new(0),
        })
    }

    /// Count one request of `token_id`; over the limit → 429 with the seconds to wait.
    pub fn check(&self, token_id: Uuid) -> Result<(), ApiError> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter.check_key(&token_id).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.limiter.clock().now());
            let secs = retry_after_secs(wait);
            metrics::counter!("licensor_http_rate_limited_total").increment(1);
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this token made more than {} requests per second; retry after {secs} s",
                    self.per_second
                ),
            );
            error.retry_after = Some(secs);
            error
        })
    }
}

/// Whole seconds for `Retry-After`: rounded up, at least 1.
fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_429_per_token() {
        let limiter = TokenRateLimiter::from_settings(&ApiSettings {
            rate_limit_per_second: 1,
            rate_limit_burst: 3,
            directory_wait_secs: 15,
        })
        .unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..3 {
            limiter.check(a).unwrap();
        }
        let e = limiter.check(a).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.code, "rate_limited");
        assert_eq!(e.retry_after, Some(1));
        // Another token has its own budget.
        limiter.check(b).unwrap();
    }

    #[test]
    fn zero_is_no_limit() {
        assert!(
            TokenRateLimiter::from_settings(&ApiSettings {
                rate_limit_per_second: 0,
                rate_limit_burst: 0,
                directory_wait_secs: 15,
            })
            .is_none()
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(20)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }
}
