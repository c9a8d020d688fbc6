//! Reading the daemon's answer to one request: the kind of answer the request wants, or
//! the daemon's error, or an error naming what came instead. Shared by every command.

use anyhow::{Result, anyhow};
use filesync_proto::control::{
    AccountInfo, ConflictInfo, DaemonStatus, InviteInfo, Response, ShareInfo, VersionEntry,
};

/// The message of a confirmation; the daemon's error or a wrong answer otherwise.
pub fn expect_ok(response: Response) -> Result<String> {
    match response {
        Response::Ok { message } => Ok(message),
        other => Err(unexpected(other, "a confirmation")),
    }
}

/// The status in an answer; the daemon's error or a wrong answer otherwise.
pub fn expect_status(response: Response) -> Result<DaemonStatus> {
    match response {
        Response::Status(status) => Ok(*status),
        other => Err(unexpected(other, "a status")),
    }
}

/// The conflicts in an answer; the daemon's error or a wrong answer otherwise.
pub fn expect_conflicts(response: Response) -> Result<Vec<ConflictInfo>> {
    match response {
        Response::Conflicts(conflicts) => Ok(conflicts),
        other => Err(unexpected(other, "a list of conflicts")),
    }
}

/// The accounts in an answer; the daemon's error or a wrong answer otherwise.
pub fn expect_accounts(response: Response) -> Result<Vec<AccountInfo>> {
    match response {
        Response::Accounts(accounts) => Ok(accounts),
        other => Err(unexpected(other, "a list of accounts")),
    }
}

/// The kept versions in an answer; the daemon's error or a wrong answer otherwise.
pub fn expect_versions(response: Response) -> Result<Vec<VersionEntry>> {
    match response {
        Response::Versions(versions) => Ok(versions),
        other => Err(unexpected(other, "a list of versions")),
    }
}

/// The shares in an answer; the daemon's error or a wrong answer otherwise.
pub fn expect_shares(response: Response) -> Result<Vec<ShareInfo>> {
    match response {
        Response::Shares(shares) => Ok(shares),
        other => Err(unexpected(other, "a list of shares")),
    }
}

/// The invite tokens in an answer; the daemon's error or a wrong answer otherwise.
pub fn expect_invites(response: Response) -> Result<Vec<InviteInfo>> {
    match response {
        Response::Invites(invites) => Ok(invites),
        other => Err(unexpected(other, "a list of invite tokens")),
    }
}

pub fn unexpected(response: Response, wanted: &str) -> anyhow::Error {
    let got = match response {
        Response::Error { message, .. } => return anyhow!(message),
        Response::Ok { .. } => "a confirmation",
        Response::Status(_) => "a status",
        Response::Conflicts(_) => "a list of conflicts",
        Response::Versions(_) => "a list of versions",
        Response::Accounts(_) => "a list of accounts",
        Response::Shares(_) => "a list of shares",
        Response::Event(_) => "an event",
        Response::Invites(_) => "a list of invite tokens",
    };
    anyhow!("the daemon answered with {got} where {wanted} was expected")
}

#[cfg(test)]
mod tests {
    use filesync_proto::control::ControlErrorKind;

    use super::*;

    #[test]
    fn answers_of_the_wrong_kind_are_errors() {
        let error = Response::Error {
            kind: ControlErrorKind::BadRequest,
            message: "no folder named docs".into(),
        };
        assert_eq!(
            expect_status(error.clone()).unwrap_err().to_string(),
            "no folder named docs"
        );
        assert_eq!(
            expect_ok(error).unwrap_err().to_string(),
            "no folder named docs"
        );
        let ok = Response::Ok {
            message: String::new(),
        };
        assert_eq!(
            expect_status(ok.clone()).unwrap_err().to_string(),
            "the daemon answered with a confirmation where a status was expected"
        );
        assert_eq!(
            expect_conflicts(ok).unwrap_err().to_string(),
            "the daemon answered with a confirmation where a list of conflicts was expected"
        );
        assert_eq!(
            expect_versions(Response::Conflicts(Vec::new()))
                .unwrap_err()
                .to_string(),
            "the daemon answered with a list of conflicts where a list of versions was expected"
        );
        assert_eq!(
            expect_ok(Response::Versions(Vec::new()))
                .unwrap_err()
                .to_string(),
            "the daemon answered with a list of versions where a confirmation was expected"
        );
        assert!(expect_conflicts(Response::Conflicts(Vec::new())).is_ok());
        assert!(expect_versions(Response::Versions(Vec::new())).is_ok());
    }
}
