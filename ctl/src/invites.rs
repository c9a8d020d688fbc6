//! `filesyncctl server invites`: the pending invite tokens of the server role, for
//! people (one line each) and for scripts (`--json`).

use std::fmt::Write as _;

use anyhow::Result;
use filesync_proto::control::{InviteInfo, Request};

use crate::answer::expect_invites;
use crate::format::{unix_now, utc_time};
use crate::output;
use crate::transport::{Client, RESPONSE_TIMEOUT};

pub async fn list(client: &Client, json: bool) -> Result<()> {
    let response = client
        .call(&Request::ServerInvites, Some(RESPONSE_TIMEOUT))
        .await?;
    let invites = expect_invites(response)?;
    let text = if json {
        output::invites_json(&invites)?
    } else {
        human(&invites, unix_now())
    };
    output::print(&text)
}

/// One line per token: its id, account, maker and expiry.
fn human(invites: &[InviteInfo], now: i64) -> String {
    if invites.is_empty() {
        return "no pending invite tokens (`filesyncctl server invite ACCOUNT` makes one)\n".into();
    }
    let mut out = String::new();
    for i in invites {
        let maker = match (i.made_by.as_str(), &i.device) {
            ("device", Some(device)) => format!("device {device}"),
            ("unknown", _) => "unknown (made before makers were recorded)".into(),
            (other, _) => other.to_owned(),
        };
        let left = i.expires.saturating_sub(now);
        let hours = if left < 3_600 {
            "within the hour".to_owned()
        } else {
            format!("in {} hours", left / 3_600)
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{}  account {}  made by {maker}  expires {} ({hours})",
            i.id,
            i.account,
            utc_time(i.expires)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(id: &str, made_by: &str, device: Option<&str>, expires: i64) -> InviteInfo {
        InviteInfo {
            id: id.into(),
            account: "alice".into(),
            made_by: made_by.into(),
            device: device.map(Into::into),
            created: 0,
            expires,
        }
    }

    #[test]
    fn tokens_show_id_account_maker_and_expiry() {
        let now = 1_800_000_000;
        let text = human(
            &[
                invite("00112233aabbccdd", "admin", None, now + 86_400),
                invite("0123456789abcdef", "device", Some("D1"), now + 600),
                invite("ffffffffffffffff", "unknown", None, now + 7_200),
            ],
            now,
        );
        assert_eq!(
            text,
            "00112233aabbccdd  account alice  made by admin  expires 2027-01-16 08:00:00 UTC (in 24 hours)
0123456789abcdef  account alice  made by device D1  expires 2027-01-15 08:10:00 UTC (within the hour)
ffffffffffffffff  account alice  made by unknown (made before makers were recorded)  expires 2027-01-15 10:00:00 UTC (in 2 hours)
"
        );
        assert!(human(&[], now).starts_with("no pending invite tokens"));
    }
}
