//! Who a device is: the exchange that follows the [`crate::handshake`] on every
//! device-to-server connection, and the invite token a person copies from the server's
//! admin to a device.
//!
//! The device sends one [`AuthRequest`]: its credential, an invite token to redeem, or
//! nothing (open registration). The server answers with one [`AuthReply`]. Only then
//! does the [`crate::wire`] exchange start, within the device's account.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::{AccountName, DeviceId};

/// Largest auth message either way; the codec refuses bigger frames before reading them.
pub const MAX_AUTH_FRAME: usize = 4096;
/// Longest token text accepted, far above a real token (about 150 characters).
pub const MAX_TOKEN_TEXT: usize = 1024;
/// What every token text starts with: the token format's version.
const TOKEN_PREFIX: &str = "fs1-";

/// A random 32-byte secret: a device credential or an invite token's secret. Its
/// `Debug` never shows the bytes, so a secret cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret(pub [u8; 32]);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The SHA-256 of a server's certificate (DER), which devices pin.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Lowercase hex; [`Fingerprint::parse`] also takes it with `:` or spaces between.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn parse(text: &str) -> Option<Fingerprint> {
        let digits: String = text
            .chars()
            .filter(|c| !matches!(c, ':' | ' ' | '-'))
            .collect();
        let bytes = hex::decode(digits).ok()?;
        Some(Fingerprint(bytes.try_into().ok()?))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthRequest {
    /// An enrolled device: the id and secret the server issued.
    Credential { device: DeviceId, secret: Secret },
    /// Enrol with an invite token's secret. `device` is the id the device would like;
    /// the server may issue another.
    Redeem {
        secret: Secret,
        device: DeviceId,
        device_name: String,
    },
    /// Enrol without a token, which only a server with open registration accepts.
    Register {
        device: DeviceId,
        device_name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthReply {
    Accepted {
        account: AccountName,
        device: DeviceId,
        /// The new credential, on enrolment only: the device must keep it.
        credential: Option<Secret>,
    },
    Refused(Refusal),
}

/// Why the server will not let a device in; each has its own words for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    TokenUnknown,
    TokenExpired,
    TokenUsed,
    CredentialUnknown,
    DeviceRevoked,
    RegistrationClosed,
    TooManyAttempts,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::TokenUnknown => {
                "the server does not know this invite token; check that it was copied whole, \
                 or ask the server's admin for a new one"
            }
            Refusal::TokenExpired => {
                "this invite token has expired or was cancelled; ask the server's admin for \
                 a new one (`filesyncctl server invite ACCOUNT`)"
            }
            Refusal::TokenUsed => {
                "this invite token was already used (each token enrols one device); ask the \
                 server's admin for a new one"
            }
            Refusal::CredentialUnknown => {
                "the server does not know this device's credential (was the server \
                 re-created?); enrol again with `filesyncctl add ... --token TOKEN`"
            }
            Refusal::DeviceRevoked => {
                "this device was revoked by the server's admin; enrol again with a new \
                 invite token (`filesyncctl add ... --token TOKEN`)"
            }
            Refusal::RegistrationClosed => {
                "this server needs an invite token: ask its admin to run \
                 `filesyncctl server invite ACCOUNT`, then `filesyncctl add ... --token TOKEN`"
            }
            Refusal::TooManyAttempts => {
                "too many failed attempts from this address; wait a minute and try again"
            }
        })
    }
}

/// What an invite token carries: where the server is, how to recognise it, and the
/// one-time secret. Its text is `fs1-` followed by the base64url of its postcard bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteToken {
    /// The address the server's admin gave (`HOST:PORT`), as a hint.
    pub server: String,
    pub fingerprint: Fingerprint,
    pub secret: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the invite token is {0} characters long, more than any token; copy it again")]
    TooLong(usize),
    #[error("this is not a filesync invite token (it should start with {TOKEN_PREFIX:?})")]
    NoPrefix,
    #[error(
        "the invite token is damaged or cut short (copy it again, whole, from \
         `filesyncctl server invite`)"
    )]
    Malformed,
}

impl InviteToken {
    pub fn to_text(&self) -> String {
        let bytes = postcard::to_stdvec(self).unwrap_or_default();
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn parse(text: &str) -> Result<InviteToken, TokenError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_TEXT {
            return Err(TokenError::TooLong(text.len()));
        }
        let body = text
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::NoPrefix)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed)?;
        match postcard::take_from_bytes::<InviteToken>(&bytes) {
            Ok((token, [])) => Ok(token),
            _ => Err(TokenError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> InviteToken {
        InviteToken {
            server: "example.invalid:7101".into(),
            fingerprint: Fingerprint([7; 32]),
            secret: Secret([9; 32]),
        }
    }

    #[test]
    fn token_text_round_trips() {
        let text = token().to_text();
        assert!(text.starts_with("fs1-"), "{text}");
        assert!(text.len() < 200, "{text}");
        assert_eq!(InviteToken::parse(&text).unwrap(), token());
        assert_eq!(InviteToken::parse(&format!("  {text}\n")).unwrap(), token());
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let text = token().to_text();
        assert_eq!(
            InviteToken::parse(&text[..text.len() - 5]),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            InviteToken::parse(&format!("{text}AAAA")),
            Err(TokenError::Malformed)
        );
        assert_eq!(InviteToken::parse("hello"), Err(TokenError::NoPrefix));
        assert_eq!(InviteToken::parse("fs1-!!!"), Err(TokenError::Malformed));
        let huge = "A".repeat(1 << 20);
        assert_eq!(InviteToken::parse(&huge), Err(TokenError::TooLong(1 << 20)));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let shown = format!("{:?}", token());
        assert!(!shown.contains("9, 9"), "{shown}");
        assert!(shown.contains("Secret(..)"), "{shown}");
    }

    #[test]
    fn fingerprints_parse_with_separators() {
        let fp = Fingerprint([0xab; 32]);
        assert_eq!(Fingerprint::parse(&fp.to_hex()), Some(fp));
        let grouped = fp
            .to_hex()
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(Fingerprint::parse(&grouped.to_uppercase()), Some(fp));
        assert_eq!(Fingerprint::parse("abcd"), None);
    }
}
