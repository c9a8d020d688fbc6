//! The page's JSON: what `filesyncctl` shows, and the actions it offers. Each handler
//! builds the control control request `filesyncctl` would send and asks the supervisor, so
//! the page and the command line share every code path. Every URL here but `/login`
//! answers 401 without a session; `/api/action` also answers 403 to a request from
//! another origin.

use axum::Json;
use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response as HttpResponse};
use filesync_proto::control::{ControlErrorKind, Keep, Request as Control, Response};
use serde::{Deserialize, Serialize};

use super::Web;
use super::session::same_origin;
use crate::supervisor::ControlCmd;

/// What the page may ask the daemon to do: a subset of the control requests, named as
/// the page's buttons name them.
#[derive(Debug, Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case")]
pub enum Action {
    Pause {
        folder: Option<String>,
    },
    Resume {
        folder: Option<String>,
    },
    /// Resume, sending the deletes the mass-delete guard holds back.
    SendHeldDeletes {
        folder: String,
    },
    Rescan {
        folder: Option<String>,
    },
    Resolve {
        folder: String,
        path: String,
        keep: Keep,
    },
    Restore {
        folder: String,
        path: String,
        version: Option<u64>,
    },
    Revoke {
        device: String,
    },
    Invite {
        account: String,
    },
    CancelInvite {
        id: String,
    },
}

impl Action {
    fn request(self) -> Control {
        match self {
            Action::Pause { folder } => Control::Pause { folder },
            Action::Resume { folder } => Control::Resume {
                folder,
                confirm_deletes: false,
            },
            Action::SendHeldDeletes { folder } => Control::Resume {
                folder: Some(folder),
                confirm_deletes: true,
            },
            Action::Rescan { folder } => Control::Rescan {
                folder,
                recreate_marker: false,
            },
            Action::Resolve { folder, path, keep } => Control::Resolve {
                folder,
                pattern: path,
                keep,
            },
            Action::Restore {
                folder,
                path,
                version,
            } => Control::Restore {
                folder,
                path,
                version,
            },
            Action::Revoke { device } => Control::ServerRevoke { device },
            Action::Invite { account } => Control::ServerInvite {
                account,
                expires_secs: None,
            },
            Action::CancelInvite { id } => Control::ServerCancelInvite { id },
        }
    }
}

/// The answer to an action: what the daemon said.
#[derive(Serialize)]
struct Outcome {
    ok: bool,
    message: String,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    token: String,
}

/// `/login?token=…`: a good token becomes a session cookie and a redirect to the page;
/// a used, expired or unknown one gets a page that says how to get another.
pub async fn login(State(web): State<Web>, Query(query): Query<LoginQuery>) -> HttpResponse {
    match web.sessions.redeem(&query.token) {
        Some(session) => (
            StatusCode::SEE_OTHER,
            [
                (SET_COOKIE, web.sessions.cookie(&session)),
                (LOCATION, "/".to_owned()),
                (CACHE_CONTROL, "no-store".to_owned()),
            ],
        )
            .into_response(),
        None => (StatusCode::FORBIDDEN, super::assets::expired_login()).into_response(),
    }
}

/// In front of every `/api/` URL, before anything reads the request: 401 unless it
/// carries a session.
pub async fn require_session(State(web): State<Web>, request: Request, next: Next) -> HttpResponse {
    if web.sessions.is_logged_in(request.headers()) {
        next.run(request).await
    } else {
        let why = "not logged in: run `filesyncctl web` on this machine and open the URL it prints";
        (StatusCode::UNAUTHORIZED, why).into_response()
    }
}

/// Asks the supervisor and answers with the response as JSON, or with its error.
async fn ask(web: &Web, request: Control) -> HttpResponse {
    match ControlCmd::ask(&web.supervisor, request).await {
        Response::Error { kind, message } => (error_status(kind), message).into_response(),
        response => Json(response).into_response(),
    }
}

fn error_status(kind: ControlErrorKind) -> StatusCode {
    match kind {
        ControlErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ControlErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub async fn status(State(web): State<Web>) -> HttpResponse {
    ask(&web, Control::Status { folder: None }).await
}

pub async fn conflicts(State(web): State<Web>) -> HttpResponse {
    ask(&web, Control::Conflicts { folder: None }).await
}

#[derive(Deserialize)]
pub struct VersionsQuery {
    folder: String,
    path: String,
}

pub async fn versions(State(web): State<Web>, Query(query): Query<VersionsQuery>) -> HttpResponse {
    let request = Control::Versions {
        folder: query.folder,
        path: query.path,
    };
    ask(&web, request).await
}

/// The server role's accounts with their devices, its pending invites and its shares,
/// as one JSON object of the three responses.
pub async fn server(State(web): State<Web>) -> HttpResponse {
    let mut parts = serde_json::Map::new();
    let asks = [
        ("accounts", Control::ServerDevices),
        ("invites", Control::ServerInvites),
        ("shares", Control::ServerShares { folder: None }),
    ];
    for (key, request) in asks {
        match ControlCmd::ask(&web.supervisor, request).await {
            Response::Error { kind, message } => {
                return (error_status(kind), message).into_response();
            }
            response => match serde_json::to_value(response) {
                Ok(value) => parts.insert(key.to_owned(), value),
                Err(e) => {
                    return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
                }
            },
        };
    }
    Json(parts).into_response()
}

/// `POST /api/action`: one [`Action`] as JSON, from the page itself only.
pub async fn action(State(web): State<Web>, headers: HeaderMap, body: Bytes) -> HttpResponse {
    if !same_origin(&headers) {
        tracing::warn!("web page: refused an action from another origin");
        let why = "refused: this request did not come from the filesync page itself";
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    let action: Action = match serde_json::from_slice(&body) {
        Ok(action) => action,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not an action: {e}")).into_response(),
    };
    tracing::info!(?action, "web page: action");
    let (ok, status, message) = match ControlCmd::ask(&web.supervisor, action.request()).await {
        Response::Ok { message } => (true, StatusCode::OK, message),
        Response::Error { kind, message } => (false, error_status(kind), message),
        other => (true, StatusCode::OK, format!("{other:?}")),
    };
    (status, Json(Outcome { ok, message })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(json: &str) -> Control {
        serde_json::from_str::<Action>(json).unwrap().request()
    }

    #[test]
    fn actions_are_the_control_requests_of_the_same_commands() {
        assert_eq!(
            action(r#"{"do":"resolve","folder":"docs","path":"a.txt","keep":"local"}"#),
            Control::Resolve {
                folder: "docs".into(),
                pattern: "a.txt".into(),
                keep: Keep::Local,
            }
        );
        assert_eq!(
            action(r#"{"do":"resume","folder":null}"#),
            Control::Resume {
                folder: None,
                confirm_deletes: false,
            }
        );
        assert_eq!(
            action(r#"{"do":"send-held-deletes","folder":"docs"}"#),
            Control::Resume {
                folder: Some("docs".into()),
                confirm_deletes: true,
            }
        );
        assert_eq!(
            action(r#"{"do":"cancel-invite","id":"ab"}"#),
            Control::ServerCancelInvite { id: "ab".into() }
        );
    }

    #[test]
    fn anything_else_is_not_an_action() {
        for json in [
            r#"{"do":"remove","folder":"docs"}"#,
            r#"{"do":"trust","server":"h:1","fingerprint":"00"}"#,
            r#"{"Pause":{"folder":null}}"#,
        ] {
            assert!(serde_json::from_str::<Action>(json).is_err(), "{json}");
        }
    }
}
