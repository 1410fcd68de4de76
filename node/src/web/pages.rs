//! The web pages every node serves: the customer widget (`/chat`), the agent console
//! (`/agent`), the supervisor wallboard (`/supervisor`) and the admin pages (`/admin`), plus
//! the public queue list the widget starts from (`GET /api/v1/queues`).
//!
//! The pages are plain HTML, CSS and JavaScript modules from `node/ui/`, compiled into the
//! binary: no build step, nothing fetched from elsewhere. Their only back end is the public API;
//! `ui/session.js` holds what every page shares (node list, failover, resumable streams,
//! retried sends with client ids). Every page answer carries a Content-Security-Policy that
//! lets scripts come only from this node and connections go only to the cluster's nodes.

use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse};
use parley_raft::command::Channel;
use serde::Serialize;
use utoipa::ToSchema;

use super::WebState;
use crate::error::ApiError;

/// One embedded file: its path under `/ui/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("../../ui/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// Files under `/ui/`.
const ASSETS: &[Asset] = &[
    asset!("style.css", CSS),
    asset!("session.js", JS),
    asset!("widget.js", JS),
    asset!("chat-page.js", JS),
    asset!("agent.js", JS),
    asset!("supervisor.js", JS),
    asset!("admin.js", JS),
];

/// The pages, by path.
const PAGES: &[(&str, &str)] = &[
    ("/", include_str!("../../ui/index.html")),
    ("/chat", include_str!("../../ui/chat.html")),
    ("/agent", include_str!("../../ui/agent.html")),
    ("/supervisor", include_str!("../../ui/supervisor.html")),
    ("/admin", include_str!("../../ui/admin.html")),
];

/// How long browsers may cache an asset before asking again, in seconds. Short: a rolling
/// upgrade changes them, and each answer carries an ETag, so asking again is cheap.
const ASSET_MAX_AGE_S: u32 = 300;

/// Registers the pages and the assets (`GET /api/v1/queues` is registered with the API, under
/// its scope).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui/{name}", web::get().to(asset));
    for (path, _) in PAGES {
        cfg.route(path, web::get().to(page));
    }
}

/// Headers on every answer of the node, API and pages alike.
pub fn common_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"))
}

/// The Content-Security-Policy of a page: scripts, styles and images from this node only;
/// connections to this node and to every member's HTTP address (a page moves to another node
/// when its own fails), over HTTP(S) and WebSocket; never framed.
fn content_security_policy(state: &WebState, secure: bool) -> String {
    let (http, ws) = if secure {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    let mut connect = vec!["'self'".to_owned()];
    for member in state.replica.status().members.values() {
        let addr = member.http_addr.trim();
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
            continue;
        }
        connect.push(format!("{http}://{addr}"));
        connect.push(format!("{ws}://{addr}"));
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         media-src 'self' data:; connect-src {}; form-action 'self'; base-uri 'none'; \
         frame-ancestors 'none'",
        connect.join(" ")
    )
}

async fn page(state: web::Data<WebState>, request: HttpRequest) -> Result<HttpResponse, ApiError> {
    if !state.pages {
        return Err(not_served());
    }
    let path = request.path();
    let Some((_, body)) = PAGES.iter().find(|(p, _)| *p == path) else {
        return Err(ApiError::not_found("not_found", "no such page"));
    };
    let secure = request.connection_info().scheme() == "https";
    let csp = content_security_policy(&state, secure);
    let mut response = HttpResponse::Ok();
    response
        .content_type(HTML)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header(("cross-origin-opener-policy", "same-origin"))
        .insert_header((
            "permissions-policy",
            "camera=(), microphone=(), geolocation=()",
        ));
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        response.insert_header((header::CONTENT_SECURITY_POLICY, csp));
    }
    if secure {
        response.insert_header((header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"));
    }
    Ok(response.body(*body))
}

async fn asset(
    state: web::Data<WebState>,
    request: HttpRequest,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if !state.pages {
        return Err(not_served());
    }
    let Some(asset) = ASSETS.iter().find(|a| a.name == name.as_str()) else {
        return Err(ApiError::not_found("not_found", "no such file"));
    };
    let etag = format!(
        "\"{}\"",
        &blake3::hash(asset.body.as_bytes()).to_hex()[..16]
    );
    let fresh = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    response.insert_header((header::ETAG, etag)).insert_header((
        header::CACHE_CONTROL,
        format!("public, max-age={ASSET_MAX_AGE_S}"),
    ));
    if fresh {
        return Ok(response.finish());
    }
    Ok(response.content_type(asset.content_type).body(asset.body))
}

fn not_served() -> ApiError {
    ApiError::not_found(
        "not_found",
        "this node does not serve pages (web.pages = false)",
    )
}

/// A queue as customers see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicQueue {
    /// The queue's id, for `POST /api/v1/chats` or `POST /api/v1/callbacks`.
    pub id: String,
    /// Its display name.
    pub name: String,
    /// `chat` or `callback` (email queues are fed by mailboxes, not listed).
    pub channel: crate::api::Channel,
    /// Whether it is inside its business hours now (by this node's clock).
    pub open: bool,
    /// What customers are told outside business hours.
    pub off_hours_message: String,
}

/// The queues a customer can start a chat in or ask a callback from, with whether each is
/// open now: what the widget's pre-chat form offers. No credential.
#[utoipa::path(get, path = "/api/v1/queues", tag = "customer",
    responses((status = 200, body = Vec<PublicQueue>)))]
pub async fn public_queues(state: web::Data<WebState>) -> Result<HttpResponse, ApiError> {
    let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
    let queues = state
        .read(move |s, _| {
            s.queues
                .values()
                .filter(|q| matches!(q.spec.channel, Channel::Chat | Channel::Callback))
                .map(|q| PublicQueue {
                    id: q.spec.id.clone(),
                    name: q.spec.name.clone(),
                    channel: q.spec.channel.into(),
                    open: q
                        .spec
                        .business_hours
                        .as_ref()
                        .is_none_or(|hours| parley_raft::state::hours::is_open(hours, now_ms)),
                    off_hours_message: q.spec.off_hours_message.clone(),
                })
                .collect::<Vec<_>>()
        })
        .await?;
    Ok(HttpResponse::Ok().json(queues))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_loads_its_scripts_from_ui_and_every_script_it_names_is_embedded() {
        for (path, body) in PAGES {
            for part in body.split("src=\"").skip(1) {
                let src = part.split('"').next().unwrap_or_default();
                let name = src.strip_prefix("/ui/");
                assert!(
                    name.is_some_and(|n| ASSETS.iter().any(|a| a.name == n)),
                    "{path} loads {src}, which is not an embedded asset"
                );
            }
            assert!(
                !body.contains("<script>"),
                "{path} has an inline script (CSP forbids it)"
            );
            assert!(
                !body.contains(" style=\""),
                "{path} has an inline style (CSP forbids it)"
            );
        }
    }

    #[test]
    fn every_module_import_names_an_embedded_asset() {
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            for line in asset
                .body
                .lines()
                .filter(|l| l.trim_start().starts_with("import "))
            {
                let from = line.rsplit("from").next().unwrap_or_default();
                let name = from
                    .trim()
                    .trim_matches(|c| c == '"' || c == ';' || c == '\'');
                let name = name.strip_prefix("./").unwrap_or(name);
                assert!(
                    ASSETS.iter().any(|a| a.name == name),
                    "{} imports {name}, which is not embedded",
                    asset.name
                );
            }
        }
    }
}
