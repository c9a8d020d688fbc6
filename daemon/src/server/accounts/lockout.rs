//! Failed guesses and the lockout they earn, for every account store: the count is kept
//! in this node's memory per source ([`source_key`]), and a source with
//! [`MAX_FAILURES`] within [`FAILURE_WINDOW`] has its failures answered "too many
//! attempts". A good secret from it still gets in, so that a neighbour behind the same
//! NAT cannot lock a device out.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Result;
use filesync_proto::auth::{AuthRequest, Refusal};

use super::Admitted;
use crate::server::lock::lock;

/// Failed attempts a source may make within [`FAILURE_WINDOW`].
pub(super) const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Where failed guesses and connection limits count a peer: its IPv4 address, or the
/// /64 of its IPv6 address (one host usually holds a whole /64, so a per-address count
/// would give it 2^64 of them). IPv4-mapped IPv6 addresses count as their IPv4 address.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        v4 => v4,
    }
}

/// The failed guesses of each source within the window, with when its count started.
#[derive(Default)]
pub struct Lockout {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Lockout {
    /// Checks the name a device asks to be enrolled under, has the store `decide` on
    /// `request` from `peer`, and answers a failed guess from a source that made too
    /// many with [`Refusal::TooManyAttempts`]. An `Err` is a failure of the store.
    pub fn judge(
        &self,
        request: &AuthRequest,
        peer: IpAddr,
        decide: impl FnOnce() -> Result<Result<Admitted, Refusal>>,
    ) -> Result<Result<Admitted, Refusal>> {
        if let AuthRequest::Redeem { device_name, .. } | AuthRequest::Register { device_name, .. } =
            request
        {
            filesync_proto::names::check_device_name(device_name).map_err(|why| {
                anyhow::anyhow!("refused to enrol device name {device_name:?}: {why}")
            })?;
        }
        let decided = decide()?;
        if !is_guess(&decided) {
            return Ok(decided);
        }
        let source = source_key(peer);
        let now = Instant::now();
        let blocked = self.blocked(source, now);
        self.failed(source, now);
        Ok(lockout(decided, blocked))
    }

    fn blocked(&self, source: IpAddr, now: Instant) -> bool {
        let failures = lock(&self.failures);
        failures.get(&source).is_some_and(|(n, since)| {
            *n >= MAX_FAILURES && now.duration_since(*since) < FAILURE_WINDOW
        })
    }

    fn failed(&self, source: IpAddr, now: Instant) {
        let mut failures = lock(&self.failures);
        failures.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
        failures.entry(source).or_insert((0, now)).0 += 1;
    }
}

/// Refusals that mean a wrong secret (a guess); a revoked device or one without a
/// token retrying is no guess.
fn is_guess(decided: &Result<Admitted, Refusal>) -> bool {
    matches!(
        decided,
        Err(Refusal::TokenUnknown
            | Refusal::TokenUsed
            | Refusal::TokenExpired
            | Refusal::CredentialUnknown)
    )
}

/// The answer to a failed guess from a source that has made too many (`blocked`): it
/// learns nothing more about its guess. Anything else stands as decided.
fn lockout(decided: Result<Admitted, Refusal>, blocked: bool) -> Result<Admitted, Refusal> {
    if blocked && is_guess(&decided) {
        Err(Refusal::TooManyAttempts)
    } else {
        decided
    }
}

#[cfg(test)]
mod tests {
    use filesync_proto::auth::Secret;
    use filesync_proto::{AccountName, DeviceId};

    use super::*;

    fn admitted() -> Admitted {
        Admitted {
            account: AccountName::new("alice").unwrap(),
            device: DeviceId::new("D1").unwrap(),
            credential: None,
        }
    }

    fn login() -> AuthRequest {
        AuthRequest::Credential {
            device: DeviceId::new("D1").unwrap(),
            secret: Secret([1; 32]),
        }
    }

    #[test]
    fn ipv6_sources_count_by_their_64_and_ipv4_by_the_address() {
        let key = |s: &str| source_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2::"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("10.0.0.1"), key("10.0.0.1"));
        assert_ne!(key("10.0.0.1"), key("10.0.0.2"));
        // A dual-stack listener sees IPv4 peers as mapped addresses: each keeps its own
        // count instead of all sharing ::ffff:0:0/64.
        assert_eq!(key("::ffff:10.0.0.1"), key("10.0.0.1"));
        assert_ne!(key("::ffff:10.0.0.1"), key("::ffff:10.0.0.2"));
    }

    #[test]
    fn a_lockout_answers_only_failed_guesses() {
        for (decided, blocked, expected) in [
            (Ok(admitted()), true, Ok(admitted())),
            (Ok(admitted()), false, Ok(admitted())),
            (
                Err(Refusal::CredentialUnknown),
                true,
                Err(Refusal::TooManyAttempts),
            ),
            (
                Err(Refusal::TokenUnknown),
                false,
                Err(Refusal::TokenUnknown),
            ),
            (
                Err(Refusal::DeviceRevoked),
                true,
                Err(Refusal::DeviceRevoked),
            ),
            (
                Err(Refusal::RegistrationClosed),
                true,
                Err(Refusal::RegistrationClosed),
            ),
        ] {
            assert_eq!(lockout(decided.clone(), blocked), expected, "{decided:?}");
        }
    }

    #[test]
    fn failures_block_a_source_for_the_window_and_only_that_source() {
        let lockout = Lockout::default();
        let (peer, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let guess = || Ok(Err(Refusal::CredentialUnknown));
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                lockout.judge(&login(), peer, guess).unwrap(),
                Err(Refusal::CredentialUnknown)
            );
        }
        assert_eq!(
            lockout.judge(&login(), peer, guess).unwrap(),
            Err(Refusal::TooManyAttempts)
        );
        assert_eq!(
            lockout.judge(&login(), other, guess).unwrap(),
            Err(Refusal::CredentialUnknown)
        );
        assert_eq!(
            lockout
                .judge(&login(), peer, || Ok(Ok(admitted())))
                .unwrap(),
            Ok(admitted()),
            "a good secret gets in from a blocked source"
        );
        let later = Instant::now() + FAILURE_WINDOW;
        assert!(lockout.blocked(peer, Instant::now()));
        assert!(!lockout.blocked(peer, later), "the window passed");
        lockout.failed(other, later);
        assert!(
            !lock(&lockout.failures).contains_key(&peer),
            "old counts are dropped"
        );
    }

    #[test]
    fn a_bad_device_name_is_refused_before_the_store_decides() {
        let lockout = Lockout::default();
        let request = AuthRequest::Register {
            device: DeviceId::new("D1").unwrap(),
            device_name: "a\nb".into(),
        };
        let peer = "10.0.0.1".parse().unwrap();
        let e = lockout
            .judge(&request, peer, || panic!("the store is not asked"))
            .unwrap_err();
        assert!(
            e.to_string().contains("refused to enrol device name"),
            "{e}"
        );
    }
}
