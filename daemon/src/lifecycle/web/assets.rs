//! The page's files, compiled into the binary: no CDN, nothing to install, works
//! offline. `/` is the page for a logged-in browser and, without a session, a page
//! that only says how to get in.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};

use super::Web;

/// Both pages start with the same head (`head.html`); each file holds the rest of its
/// page, from its title on.
const PAGE: &str = concat!(
    include_str!("assets/head.html"),
    include_str!("assets/index.html")
);
const LOGIN: &str = concat!(
    include_str!("assets/head.html"),
    include_str!("assets/login.html")
);
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// The page, or how to get in.
pub async fn page(State(web): State<Web>, headers: HeaderMap) -> Response {
    let html = if web.sessions.is_logged_in(&headers) {
        PAGE.to_owned()
    } else {
        LOGIN.replace("{WHY}", "")
    };
    ([(CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// What a used, expired or unknown login URL shows.
pub fn expired_login() -> Html<String> {
    let why = "<p class=\"problem\">That login URL was used already or has expired; each \
               works once, for five minutes.</p>";
    Html(LOGIN.replace("{WHY}", why))
}

pub async fn script() -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

pub async fn style() -> Response {
    ([(CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}
