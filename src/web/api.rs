//! The JSON API and the page's files (CONTRACT 6). One warp route takes every request and
//! `handle` dispatches it, so the rules hold in one place for every path: files and
//! `/healthz` without a session; `/api/login`; every other `/api/*` needs the session cookie, and
//! every non-GET the session's `X-CSRF-Token`; viewers only read.
//!
//! Reads call the services directly. Every write is a command on the command plane
//! ([`CommandPlane::submit_and_wait`](crate::command::CommandPlane::submit_and_wait) on the core
//! runtime): the same door, the same function and the same result record on the response topic as
//! the matching MQTT command. A write runs as a *job*: answered at once when it ends within
//! [`JOB_ANSWER_WITHIN`], else `202` with the job, which the page follows (`GET /api/jobs/{id}`)
//! to show progress.
//!
//! Every error is JSON `{"error": what happened, "hint": what to do next}` with its status code
//! and a counter. Bodies are bounded in size and time ([`MAX_JSON_BODY`], [`BODY_TIMEOUT`]).
//! Must not: hold the services' logic, read an unbounded body, or touch files outside the
//! appliance's state directory (only reader firmware uploads write, into its firmware folder).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use warp::Filter;

use super::auth::{Auth, LoginError, Session};
use super::live::{self, Live};
use super::{assets, ClientAddr, Services};
use crate::command::{Outcome, Protocol, Target};
use crate::config::{Role, WebConfig};
use crate::metrics::Metrics;
use crate::ops::log_ring::{self, LogFilter, LogRing};
use crate::time::{now_ms, rfc3339_ms};

/// Largest JSON body accepted.
pub const MAX_JSON_BODY: u64 = 256 * 1024;
/// Largest reader firmware upload (what the edge can serve over TFTP).
pub const MAX_FIRMWARE_UPLOAD: u64 = crate::reader::request::MAX_FIRMWARE_BYTES;
/// A JSON body must arrive within this time.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// An upload must arrive within this time.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Live event streams open at once (each page view holds one).
pub const MAX_EVENT_STREAMS: usize = 16;
/// Time between status events on a live stream.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Jobs running at once.
pub const MAX_RUNNING_JOBS: usize = 16;
/// Jobs remembered (finished ones are forgotten oldest first).
pub const MAX_JOBS: usize = 64;
/// A write answers at once when its job ends within this time, else `202` with the job.
pub const JOB_ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// How long a job waits for its command's result (reader log pulls and firmware take minutes).
pub const JOB_LIMIT: Duration = Duration::from_secs(20 * 60);
/// TTL of a device command sent from the page: a technician's action should not run a day later.
pub const PAGE_COMMAND_TTL_S: u64 = 120;
/// Log lines per answer or live event at most.
const MAX_LOG_LINES: usize = 500;
/// The session cookie's name.
pub const COOKIE: &str = "roadedge_session";

/// The Content-Security-Policy of every response: nothing but the appliance's own files.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A command job started from the page.
#[derive(Debug, Clone)]
struct Job {
    id: u64,
    label: String,
    /// The command's request id (its result on the response topic carries it).
    request_id: String,
    user: String,
    started: Instant,
    started_at: String,
    /// The command's end as the page shows it (`None` while running).
    outcome: Option<Value>,
}

impl Job {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "label": self.label,
            "request_id": self.request_id,
            "user": self.user,
            "started_at": self.started_at,
            "elapsed_s": self.started.elapsed().as_secs(),
            "state": if self.outcome.is_some() { "done" } else { "running" },
        });
        if let Some(o) = &self.outcome {
            for (k, val) in o.as_object().into_iter().flatten() {
                v[k] = val.clone();
            }
        }
        v
    }
}

/// Everything the handlers share.
pub struct State {
    auth: Auth,
    services: Services,
    pub(super) live: Arc<Live>,
    logs: Arc<LogRing>,
    secure_cookie: bool,
    shutdown: CancellationToken,
    event_streams: Arc<Semaphore>,
    login_checks: Arc<Semaphore>,
    jobs: Arc<Mutex<BTreeMap<u64, Job>>>,
    next_id: AtomicU64,
    /// Distinguishes this run's request ids from an earlier run's.
    run_tag: String,
}

impl State {
    pub fn new(config: &WebConfig, services: Services, tls: bool, shutdown: CancellationToken) -> Arc<State> {
        let run_tag: [u8; 3] = rand::random();
        let auth = Auth::new(config.users.clone());
        auth.adopt_sessions(&services.sessions, Instant::now());
        Arc::new(State {
            auth,
            services,
            live: Arc::new(Live::default()),
            logs: log_ring::global(),
            secure_cookie: tls,
            shutdown,
            event_streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
            login_checks: Arc::new(Semaphore::new(2)),
            jobs: Arc::new(Mutex::new(BTreeMap::new())),
            next_id: AtomicU64::new(1),
            run_tag: run_tag.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    pub fn metrics(&self) -> &Metrics {
        &self.services.metrics
    }

    /// Hands the open sessions to the server of the next start of the core.
    pub fn keep_sessions(&self) {
        self.auth.keep_sessions(&self.services.sessions);
    }

    /// Starts the live tables' task (on the web runtime).
    pub fn spawn_live(self: &Arc<Self>) {
        tokio::spawn(live::run(
            self.live.clone(),
            self.services.metrics.clone(),
            self.services.store.clone(),
            self.shutdown.clone(),
        ));
    }
}

/// The one route: every request goes to `handle`.
pub fn routes(
    state: Arc<State>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<ClientAddr>())
        .and(warp::body::stream().map(boxed_body))
        .then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: HeaderMap,
                  addr: Option<ClientAddr>,
                  body: Body| {
                let state = state.clone();
                async move {
                    let request = Request {
                        method,
                        path: path.as_str().to_string(),
                        query: parse_query(&query),
                        headers,
                        addr: addr.map(|a| a.0),
                    };
                    let mut response = handle(&state, request, body).await;
                    secure_headers(&mut response, state.secure_cookie);
                    response
                }
            },
        )
        .recover(|_| async {
            Ok::<_, std::convert::Infallible>(error(StatusCode::NOT_FOUND, "no such page", "check the address"))
        })
        .unify()
}

struct Request {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
    addr: Option<SocketAddr>,
}

impl Request {
    fn ip(&self) -> IpAddr {
        self.addr.map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn cookie(&self) -> Option<String> {
        self.headers.get_all("cookie").iter().find_map(|v| {
            v.to_str().ok()?.split(';').find_map(|part| {
                let (k, val) = part.trim().split_once('=')?;
                (k == COOKIE).then(|| val.to_string())
            })
        })
    }
}

type Body = std::pin::Pin<Box<dyn Stream<Item = Result<Box<dyn Buf + Send>, warp::Error>> + Send>>;

fn boxed_body<S, B>(stream: S) -> Body
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send + 'static,
{
    Box::pin(stream.map(|chunk| chunk.map(|b| Box::new(b) as Box<dyn Buf + Send>)))
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A JSON response.
fn reply(status: StatusCode, body: &Value) -> warp::reply::Response {
    let mut r = warp::reply::Response::new(serde_json::to_vec(body).unwrap_or_default().into());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// An error: what happened and what to do next.
fn error(status: StatusCode, what: &str, hint: &str) -> warp::reply::Response {
    reply(status, &json!({"error": what, "hint": hint}))
}

fn ok(body: Value) -> warp::reply::Response {
    reply(StatusCode::OK, &body)
}

fn secure_headers(r: &mut warp::reply::Response, tls: bool) {
    let h = r.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    if tls {
        h.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    if !h.contains_key("cache-control") {
        h.insert("cache-control", HeaderValue::from_static("no-store"));
    }
}

/// Counts a refusal by its status code.
fn count(metrics: &Metrics, status: StatusCode) {
    let web = &metrics.web;
    let counter = match status {
        StatusCode::UNAUTHORIZED => &web.unauthorized_total,
        StatusCode::FORBIDDEN => &web.forbidden_total,
        StatusCode::BAD_REQUEST => &web.bad_request_total,
        StatusCode::PAYLOAD_TOO_LARGE => &web.too_large_total,
        StatusCode::TOO_MANY_REQUESTS => &web.rate_limited_total,
        StatusCode::REQUEST_TIMEOUT => &web.slow_closed_total,
        _ => return,
    };
    counter.fetch_add(1, Relaxed);
}

async fn handle(state: &Arc<State>, request: Request, body: Body) -> warp::reply::Response {
    state.metrics().web.requests_total.fetch_add(1, Relaxed);
    let response = route(state, &request, body).await;
    count(state.metrics(), response.status());
    response
}

async fn route(state: &Arc<State>, request: &Request, body: Body) -> warp::reply::Response {
    let path = request.path.as_str();
    let method = &request.method;
    if !path.starts_with("/api/") {
        return match (method, path) {
            (&Method::GET, "/healthz") | (&Method::HEAD, "/healthz") => health(state),
            (&Method::GET, p) | (&Method::HEAD, p) => file(request, p),
            _ => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET is served outside /api/",
                "open the page at /",
            ),
        };
    }
    if path == "/api/login" {
        return if method == Method::POST {
            login(state, request, body).await
        } else {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "log in with POST",
                "use the login form on the page",
            )
        };
    }
    let Some(token) = request.cookie() else {
        return error(StatusCode::UNAUTHORIZED, "not logged in", "log in on the page");
    };
    let Some(session) = state.auth.session(&token, Instant::now()) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "your session has ended (logged out, expired or the appliance restarted)",
            "log in again",
        );
    };
    if method != Method::GET && method != Method::HEAD {
        let sent = request.header("x-csrf-token").unwrap_or("");
        if !super::auth::same_secret(sent, &session.csrf_token) {
            return error(
                StatusCode::FORBIDDEN,
                "missing or wrong X-CSRF-Token for this session",
                "reload the page (it fetches this session's token) and try again",
            );
        }
        if path == "/api/logout" {
            state.auth.close_session(&token);
            let mut r = ok(json!({"logged_out": true}));
            r.headers_mut()
                .insert("set-cookie", cookie_header("", state.secure_cookie, true));
            return r;
        }
        if session.role != Role::Admin {
            return error(
                StatusCode::FORBIDDEN,
                "a viewer account can only look",
                "log in with an admin account to change anything",
            );
        }
    }
    let segments: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::GET, ["session"]) => ok(json!({
            "user": session.user,
            "role": role_name(session.role),
            "csrf_token": session.csrf_token,
            "expires_in_s": session.expires_in(Instant::now()).as_secs(),
            "edge_id": state.services.plane.edge().edge_id,
            "version": state.services.plane.edge().version,
        })),
        (Method::GET, ["status"]) => ok(crate::command::status(
            state.services.plane.edge(),
            &state.services.metrics,
        )),
        (Method::GET, ["overview"]) => ok(overview(state)),
        (Method::GET, ["history"]) => ok(live::history_json(&state.live.history())),
        (Method::GET, ["alarms"]) => ok(json!({"alarms": edge_alarms(state)})),
        (Method::GET, ["events"]) => events(state, request, token).await,
        (Method::GET, ["logs"]) => logs(state, request),
        (Method::GET, ["readers"]) => readers(state),
        (Method::GET, ["readers", "firmware"]) => firmware_list(state),
        (Method::POST, ["readers", "firmware"]) => firmware_upload(state, request, body).await,
        (Method::GET, ["readers", id]) => reader(state, id).await,
        (Method::GET, ["rule-template"]) => rule_template(request),
        (Method::POST, ["readers", id, "command"]) => {
            let Some(service) = &state.services.readers else {
                return no_readers();
            };
            if service.reader(id).is_none() {
                return unknown_reader(id);
            }
            let target = Target::Device {
                protocol: Protocol::Gbt37987,
                device: id.to_string(),
            };
            command(state, request, body, &session, target).await
        }
        (Method::GET, ["vehicles"]) => vehicles(state),
        (Method::GET, ["registry"]) => registry_list(state, request).await,
        (Method::GET, ["passages"]) => passages_list(state, request),
        (Method::GET, ["registry", "export"]) => registry_export(state).await,
        (Method::POST, ["registry", "import"]) => registry_import(state, request, body).await,
        (Method::POST, ["vehicles", protocol, id, "command"]) => {
            let protocol = match *protocol {
                "gbt32960" => Protocol::Gbt32960,
                "jt808" => Protocol::Jt808,
                other => {
                    return error(
                        StatusCode::NOT_FOUND,
                        &format!("`{other}` is not a vehicle protocol"),
                        "use gbt32960 or jt808",
                    )
                }
            };
            let target = Target::Device {
                protocol,
                device: id.to_string(),
            };
            command(state, request, body, &session, target).await
        }
        (Method::GET, ["jt808", "terminals"]) => jt808_terminals(state).await,
        (Method::POST, ["jt808", action @ ("provision" | "deprovision")]) => {
            if state.services.jt808.is_none() {
                return no_jt808();
            }
            let mut document = match read_json(request, body).await {
                Ok(d) => d,
                Err(r) => return r,
            };
            // The same edge command the cloud sends: one implementation, two doors.
            document["action"] = json!(format!("jt808.{action}"));
            start_job(state, &session, Target::Edge, document).await
        }
        (Method::GET, ["ota"]) => ok(state.services.ota.status()),
        (Method::POST, ["ota", "upload"]) => ota_upload(state, request, body).await,
        (Method::POST, ["ota", "install"]) => {
            let document = match read_json(request, body).await {
                Ok(d) => d,
                Err(r) => return r,
            };
            let Some(name) = document.get("name").and_then(Value::as_str) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "`name` (the uploaded update file) is missing",
                    "upload the update and its .sig first, then install it by name",
                );
            };
            // The same edge command the cloud sends: one implementation, two doors.
            let command = json!({"action": "ota.install", "upload": name});
            start_job(state, &session, Target::Edge, command).await
        }
        // Configuration page: reads call the service, writes are the edge commands.
        (Method::GET, ["config"]) => config_get(state, &session),
        (Method::POST, ["config", "validate"]) => match yaml_body(request, body).await {
            Ok(yaml) => ok(state.services.config.validate(&yaml)),
            Err(r) => r,
        },
        (Method::POST, ["config", "diff"]) => match yaml_body(request, body).await {
            Ok(yaml) => match state.services.config.diff(&yaml) {
                Ok(d) => ok(json!(d)),
                Err(e) => error(
                    StatusCode::CONFLICT,
                    &e.to_string(),
                    "start the appliance from a configuration file",
                ),
            },
            Err(r) => r,
        },
        (Method::POST, ["config", "apply"]) => match yaml_body(request, body).await {
            // The same edge command the cloud sends: one implementation, two doors.
            Ok(yaml) => {
                start_job(
                    state,
                    &session,
                    Target::Edge,
                    json!({"action": "config.set", "yaml": yaml}),
                )
                .await
            }
            Err(r) => r,
        },
        (Method::POST, ["config", "confirm"]) => {
            start_job(state, &session, Target::Edge, json!({"action": "config.confirm"})).await
        }
        (Method::POST, ["log_level"]) => {
            let document = match read_json(request, body).await {
                Ok(d) => d,
                Err(r) => return r,
            };
            let Some(level) = document.get("level").and_then(Value::as_str) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "`level` is missing",
                    "send {\"level\": \"debug\"} (or error, warn, info, trace, or a filter)",
                );
            };
            start_job(
                state,
                &session,
                Target::Edge,
                json!({"action": "log_level", "level": level}),
            )
            .await
        }
        (Method::POST, ["restart"]) => start_job(state, &session, Target::Edge, json!({"action": "restart"})).await,
        (Method::GET, ["edge", "actions"]) => ok(json!({"actions": state.services.plane.edge_actions().names()})),
        (Method::POST, ["edge", "command"]) => command(state, request, body, &session, Target::Edge).await,
        (Method::GET, ["jobs"]) => {
            let jobs: Vec<Value> = state
                .jobs
                .lock()
                .map(|j| j.values().rev().map(Job::to_json).collect())
                .unwrap_or_default();
            ok(json!({"jobs": jobs}))
        }
        (Method::GET, ["jobs", id]) => {
            let job = id
                .parse::<u64>()
                .ok()
                .and_then(|id| state.jobs.lock().ok()?.get(&id).map(Job::to_json));
            match job {
                Some(j) => ok(j),
                None => error(
                    StatusCode::NOT_FOUND,
                    &format!("no job {id}"),
                    "jobs are kept in memory only: after a restart, look for the result on the device's page",
                ),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            &format!("no API route {method} {path}"),
            "reload the page: it may be older than the appliance's software",
        ),
    }
}

/// `GET /api/config`: admins only, even though it is a read: the file holds the password hashes.
fn config_get(state: &State, session: &Session) -> warp::reply::Response {
    if session.role != Role::Admin {
        return error(
            StatusCode::FORBIDDEN,
            "the configuration file holds password hashes: only admins may read it",
            "log in with an admin account",
        );
    }
    match state.services.config.get() {
        Ok(v) => ok(v),
        Err(e) => error(
            StatusCode::CONFLICT,
            &e.to_string(),
            "start the appliance from a configuration file",
        ),
    }
}

/// The `yaml` string of a JSON body.
async fn yaml_body(request: &Request, body: Body) -> Result<String, warp::reply::Response> {
    let document = read_json(request, body).await?;
    match document.get("yaml").and_then(Value::as_str) {
        Some(y) => Ok(y.to_string()),
        None => Err(error(
            StatusCode::BAD_REQUEST,
            "`yaml` (the configuration text) is missing",
            "send {\"yaml\": \"...\"}",
        )),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        Role::Viewer => "viewer",
    }
}

fn cookie_header(token: &str, secure: bool, clear: bool) -> HeaderValue {
    let mut c = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if clear {
        c.push_str("; Max-Age=0");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

fn health(state: &State) -> warp::reply::Response {
    if state.services.store.is_open() {
        ok(json!({"status": "ok"}))
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is not running",
            "see the appliance's log; it restarts under systemd",
        )
    }
}

fn file(request: &Request, path: &str) -> warp::reply::Response {
    let Some(asset) = assets::find(path) else {
        return error(StatusCode::NOT_FOUND, "no such page", "open the page at /");
    };
    let etag = asset.etag();
    if request.header("if-none-match") == Some(etag) {
        let mut r = warp::reply::Response::new(Vec::<u8>::new().into());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r.headers_mut().insert("etag", HeaderValue::from_static(etag));
        r.headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-cache"));
        return r;
    }
    let gzip = request
        .header("accept-encoding")
        .is_some_and(|a| a.split(',').any(|e| e.trim().starts_with("gzip")));
    let bytes: &'static [u8] = if gzip { asset.gzip } else { asset.raw };
    let mut r = warp::reply::Response::new(bytes.into());
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static(asset.content_type));
    h.insert("etag", HeaderValue::from_static(etag));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert("vary", HeaderValue::from_static("accept-encoding"));
    if gzip {
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
    }
    r
}

/// Reads a body of at most `limit` bytes arriving within `within`.
async fn read_body(
    request: &Request,
    mut body: Body,
    limit: u64,
    within: Duration,
) -> Result<Bytes, warp::reply::Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than {limit} bytes"),
            "send less (for files: check you picked the right one)",
        )
    };
    if request
        .header("content-length")
        .and_then(|l| l.parse::<u64>().ok())
        .is_some_and(|l| l > limit)
    {
        return Err(too_large());
    }
    let collect = async {
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    &format!("the request body could not be read: {e}"),
                    "send the request again",
                )
            })?;
            if out.len() as u64 + chunk.remaining() as u64 > limit {
                return Err(too_large());
            }
            while chunk.has_remaining() {
                let part = chunk.chunk();
                out.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok(Bytes::from(out))
    };
    match tokio::time::timeout(within, collect).await {
        Ok(r) => r,
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "the request body arrived too slowly",
            "check the connection to the appliance and send it again",
        )),
    }
}

/// Reads a JSON object body.
async fn read_json(request: &Request, body: Body) -> Result<Value, warp::reply::Response> {
    let bytes = read_body(request, body, MAX_JSON_BODY, BODY_TIMEOUT).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "the request body must be a JSON object",
            "send an object such as {\"action\": \"...\"}",
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("the request body is not valid JSON: {e}"),
            "correct the JSON and send it again",
        )),
    }
}

async fn login(state: &Arc<State>, request: &Request, body: Body) -> warp::reply::Response {
    let ip = request.ip();
    if let Err(LoginError::Blocked(wait)) = state.auth.check_blocked(ip, Instant::now()) {
        return blocked(wait);
    }
    let document = match read_body(request, body, 4096, BODY_TIMEOUT).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let form: serde_json::Result<LoginForm> = serde_json::from_slice(&document);
    let Ok(form) = form else {
        return error(
            StatusCode::BAD_REQUEST,
            "a login is {\"username\": \"...\", \"password\": \"...\"}",
            "use the login form on the page",
        );
    };
    // Argon2 is deliberately slow: two checks at a time at most, off the web thread.
    let Ok(_permit) = state.login_checks.clone().acquire_owned().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
            "try again in a minute",
        );
    };
    let checker = state.clone();
    let verdict =
        tokio::task::spawn_blocking(move || checker.auth.verify(ip, &form.username, &form.password, Instant::now()))
            .await;
    match verdict {
        Ok(Ok(user)) => {
            let (token, csrf) = state.auth.open_session(&user, Instant::now());
            tracing::info!(user = %user.name, address = %ip, "web: logged in");
            let mut r = ok(json!({"csrf_token": csrf, "user": user.name, "role": role_name(user.role)}));
            r.headers_mut()
                .insert("set-cookie", cookie_header(&token, state.secure_cookie, false));
            r
        }
        Ok(Err(LoginError::Blocked(wait))) => blocked(wait),
        Ok(Err(LoginError::BadCredentials)) => {
            state.metrics().web.login_failures_total.fetch_add(1, Relaxed);
            tracing::warn!(address = %ip, "web: failed login");
            error(
                StatusCode::UNAUTHORIZED,
                "wrong user name or password",
                "check both and try again; after 5 failures this address must wait a minute",
            )
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the password check failed: {e}"),
            "try again",
        ),
    }
}

#[derive(serde::Deserialize)]
struct LoginForm {
    username: String,
    password: String,
}

fn blocked(wait: Duration) -> warp::reply::Response {
    let seconds = wait.as_secs().max(1);
    let mut r = error(
        StatusCode::TOO_MANY_REQUESTS,
        "too many failed logins from this address",
        &format!("wait {seconds} s, then log in again"),
    );
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        r.headers_mut().insert("retry-after", v);
    }
    r
}

fn edge_alarms(state: &State) -> Vec<Value> {
    state
        .services
        .alarms
        .active()
        .iter()
        .map(|a| {
            json!({
                "alarm": a.name,
                "subject": a.subject,
                "raised_at": rfc3339_ms(a.raised_ms),
                "detail": a.detail,
            })
        })
        .collect()
}

/// The dashboard's document: status, every counter, system figures, alarms, the newest sample.
fn overview(state: &State) -> Value {
    let services = &state.services;
    json!({
        "time": rfc3339_ms(now_ms()),
        "status": crate::command::status(services.plane.edge(), &services.metrics),
        "metrics": services.metrics.snapshot(now_ms(), state.live.system()),
        "alarms": edge_alarms(state),
        "sample": state.live.latest(),
        "enabled": {
            "gbt32960": services.gbt32960_enabled,
            "jt808": services.jt808_enabled,
            "readers": services.readers.is_some(),
        },
    })
}

fn log_filter(request: &Request) -> LogFilter {
    let nonempty = |k: &str| request.query.get(k).filter(|v| !v.is_empty()).cloned();
    LogFilter {
        min_level: nonempty("level").and_then(|l| log_ring::parse_level(&l)),
        module: nonempty("module"),
        text: nonempty("q"),
    }
}

fn logs(state: &State, request: &Request) -> warp::reply::Response {
    let after = request.query.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let limit = request
        .query
        .get("limit")
        .and_then(|a| a.parse().ok())
        .unwrap_or(MAX_LOG_LINES)
        .min(MAX_LOG_LINES);
    let lines = state.logs.since(after, &log_filter(request), limit);
    ok(json!({
        "lines": lines,
        "last_seq": *state.logs.watch().borrow(),
        "modules": state.logs.modules(),
        "capacity": log_ring::RING_LINES,
    }))
}

/// `GET /api/events?topics=status,logs&level=..&module=..&q=..&after=N`: server-sent events.
/// `status` every [`STATUS_EVERY`] (the dashboard document), `logs` as lines arrive.
async fn events(state: &Arc<State>, request: &Request, token: String) -> warp::reply::Response {
    let Ok(permit) = state.event_streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("{MAX_EVENT_STREAMS} live views are open already"),
            "close other tabs or windows of this page, then reload",
        );
    };
    let topics = request.query.get("topics").cloned().unwrap_or_else(|| "status".into());
    let want_status = topics.split(',').any(|t| t == "status");
    let want_logs = topics.split(',').any(|t| t == "logs");
    let filter = log_filter(request);
    let after: u64 = request.query.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let stream_state = StreamState {
        state: state.clone(),
        token,
        want_status,
        want_logs,
        filter,
        after,
        tick: tokio::time::interval(STATUS_EVERY),
        log_watch: state.logs.watch(),
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(stream_state, |mut s| async move {
        loop {
            let shutdown = s.state.shutdown.clone();
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = s.tick.tick() => {
                    if !s.state.auth.is_live(&s.token, Instant::now()) {
                        let event = warp::sse::Event::default().event("session").data("ended");
                        return Some((Ok::<_, std::convert::Infallible>(event), s.ended()));
                    }
                    if s.want_status {
                        let data = overview(&s.state).to_string();
                        return Some((Ok(warp::sse::Event::default().event("status").data(data)), s));
                    }
                }
                changed = s.log_watch.changed(), if s.want_logs => {
                    if changed.is_err() {
                        return None;
                    }
                    let lines = s.state.logs.since(s.after, &s.filter, MAX_LOG_LINES);
                    s.after = *s.log_watch.borrow_and_update();
                    if !lines.is_empty() {
                        let data = json!({"lines": lines}).to_string();
                        return Some((Ok(warp::sse::Event::default().event("logs").data(data)), s));
                    }
                }
            }
        }
    });
    let reply = warp::sse::reply(warp::sse::keep_alive().stream(stream));
    warp::reply::Reply::into_response(reply)
}

struct StreamState {
    state: Arc<State>,
    token: String,
    want_status: bool,
    want_logs: bool,
    filter: LogFilter,
    after: u64,
    tick: tokio::time::Interval,
    log_watch: tokio::sync::watch::Receiver<u64>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl StreamState {
    /// After the `session` event the stream only waits for the client to go.
    fn ended(mut self) -> Self {
        self.want_status = false;
        self.want_logs = false;
        self
    }
}

fn no_readers() -> warp::reply::Response {
    error(
        StatusCode::NOT_FOUND,
        "no readers are configured on this edge",
        "add a `readers:` section on the Configuration page",
    )
}

fn unknown_reader(id: &str) -> warp::reply::Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no reader `{id}`"),
        "pick a reader from the list on the Readers page",
    )
}

fn readers(state: &State) -> warp::reply::Response {
    let Some(service) = &state.services.readers else {
        return ok(json!({"enabled": false, "readers": []}));
    };
    ok(json!({"enabled": true, "readers": service.readers()}))
}

async fn reader(state: &State, id: &str) -> warp::reply::Response {
    let Some(service) = &state.services.readers else {
        return no_readers();
    };
    let Some(info) = service.reader(id) else {
        return unknown_reader(id);
    };
    let rules = match service.rules(id).await {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the rules could not be read: {e}"),
                "try again; if it persists, see the Logs page",
            )
        }
    };
    let alarms = service.alarms(id).await.unwrap_or_default();
    let select: Vec<Value> = rules
        .select
        .iter()
        .map(|(spec_id, p)| {
            let antennas: Vec<u8> = p
                .params()
                .iter()
                .filter(|c| c.name() == Some("AntennaSpec"))
                .filter_map(|spec| spec.field("AntennaIDs").and_then(|v| v.as_bytes()))
                .flatten()
                .copied()
                .collect();
            json!({
                "spec_id": spec_id,
                "desired": crate::reader::rules::select_state(p).map(|s| s.name()),
                "on_reader": info.select_specs.get(spec_id),
                "start_trigger": match crate::reader::rules::start_trigger(p) {
                    0 => "on command",
                    1 => "immediate",
                    2 => "periodic",
                    3 => "GPI",
                    _ => "other",
                },
                "antennas": antennas,
                "spec": crate::protocol::gbt37987::json::param_to_json(p),
            })
        })
        .collect();
    let access: Vec<Value> = rules
        .access
        .iter()
        .map(|(spec_id, p)| {
            json!({
                "spec_id": spec_id,
                "enabled": crate::reader::rules::access_enabled(p),
                "select_spec_id": p.field("SelectSpecID").and_then(|v| v.as_u64()),
                "spec": crate::protocol::gbt37987::json::param_to_json(p),
            })
        })
        .collect();
    ok(json!({
        "reader": info,
        "select_rules": select,
        "access_rules": access,
        "alarms": alarms.iter().map(crate::reader::db::ActiveAlarm::to_json).collect::<Vec<_>>(),
        "tags": state.live.tags(id),
    }))
}

/// `GET /api/rule-template?spec_id=N&antennas=1,2&start=0|1|2`: the SelectSpec the form fills in
/// (the same template the demo and the tests use).
fn rule_template(request: &Request) -> warp::reply::Response {
    let spec_id: u32 = request.query.get("spec_id").and_then(|s| s.parse().ok()).unwrap_or(1);
    let start: u8 = request.query.get("start").and_then(|s| s.parse().ok()).unwrap_or(1);
    let antennas: Vec<u8> = request
        .query
        .get("antennas")
        .map(|a| a.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1]);
    if antennas.is_empty() || antennas.len() > 16 {
        return error(
            StatusCode::BAD_REQUEST,
            "antennas must be 1 to 16 antenna numbers",
            "enter antenna numbers separated by commas, e.g. 1,2",
        );
    }
    ok(json!({"select_spec": crate::reader::rules::default_select_spec(
        spec_id,
        crate::reader::rules::SpecState::Disabled,
        start,
        &antennas,
    )}))
}

fn firmware_list(state: &State) -> warp::reply::Response {
    let Some(service) = &state.services.readers else {
        return no_readers();
    };
    let files: Vec<Value> = service
        .firmware_files()
        .into_iter()
        .map(|(name, bytes)| json!({"name": name, "bytes": bytes}))
        .collect();
    ok(json!({"files": files, "max_bytes": MAX_FIRMWARE_UPLOAD}))
}

/// `POST /api/readers/firmware?name=FILE` with the image as the body: stored in the edge's
/// firmware folder, from where `firmware_download` with `file` serves it to a reader.
async fn firmware_upload(state: &State, request: &Request, mut body: Body) -> warp::reply::Response {
    let Some(service) = &state.services.readers else {
        return no_readers();
    };
    let name = request.query.get("name").cloned().unwrap_or_default();
    let upload = match service.firmware_upload(&name) {
        Ok(u) => u,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &e.to_string(),
                "rename the file and upload it again",
            )
        }
    };
    if request
        .header("content-length")
        .and_then(|l| l.parse::<u64>().ok())
        .is_some_and(|l| l > MAX_FIRMWARE_UPLOAD)
    {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("a firmware image is at most {MAX_FIRMWARE_UPLOAD} bytes (what TFTP can serve)"),
            "check that this is the reader's firmware file",
        );
    }
    let write = async {
        let mut file = tokio::fs::File::create(&upload.temporary)
            .await
            .map_err(|e| format!("cannot create the file: {e}"))?;
        let mut written: u64 = 0;
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| format!("the upload broke off: {e}"))?;
            written += chunk.remaining() as u64;
            if written > MAX_FIRMWARE_UPLOAD {
                return Err("too large".to_string());
            }
            while chunk.has_remaining() {
                let part = chunk.chunk().to_vec();
                chunk.advance(part.len());
                file.write_all(&part)
                    .await
                    .map_err(|e| format!("writing failed: {e}"))?;
            }
        }
        file.sync_all().await.map_err(|e| format!("writing failed: {e}"))?;
        Ok(written)
    };
    match tokio::time::timeout(UPLOAD_TIMEOUT, write).await {
        Ok(Ok(bytes)) => match upload.finish() {
            Ok(()) => {
                tracing::info!(file = %name, bytes, "web: reader firmware uploaded");
                ok(json!({"name": name, "bytes": bytes}))
            }
            Err(e) => {
                upload.abandon();
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("the file could not be put in place: {e}"),
                    "check free disk space on the Dashboard and upload again",
                )
            }
        },
        Ok(Err(e)) if e == "too large" => {
            upload.abandon();
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("a firmware image is at most {MAX_FIRMWARE_UPLOAD} bytes (what TFTP can serve)"),
                "check that this is the reader's firmware file",
            )
        }
        Ok(Err(e)) => {
            upload.abandon();
            error(
                StatusCode::BAD_REQUEST,
                &e,
                "check free disk space on the Dashboard and upload again",
            )
        }
        Err(_) => {
            upload.abandon();
            error(
                StatusCode::REQUEST_TIMEOUT,
                "the upload took longer than 10 minutes",
                "check the connection to the appliance and upload again",
            )
        }
    }
}

/// `POST /api/ota/upload?name=FILE` with the file as the body: an update or its signature
/// (`FILE.sig`), streamed into the OTA upload folder (bounded by `ota.max_bytes`; a signature by
/// 4 KiB). `ota.install` with `upload` then takes it through the same checks as any update.
async fn ota_upload(state: &State, request: &Request, mut body: Body) -> warp::reply::Response {
    let ota = &state.services.ota;
    let Some(dir) = ota.upload_dir() else {
        return error(
            StatusCode::NOT_FOUND,
            "updates are not configured on this appliance (no `ota:` section)",
            "add `ota.public_key_file` to the configuration to enable updates",
        );
    };
    let name = request.query.get("name").cloned().unwrap_or_default();
    if !crate::ops::ota::valid_upload_name(&name) {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("`{name}` is not a plain file name"),
            "rename the file to letters, digits, `.`, `_` and `-` and upload it again",
        );
    }
    let max = if name.ends_with(".sig") { 4096 } else { ota.max_bytes() };
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("{name} is larger than {max} bytes (ota.max_bytes; a signature at most 4096)"),
            "check that this is the update file for this appliance",
        )
    };
    if request
        .header("content-length")
        .and_then(|l| l.parse::<u64>().ok())
        .is_some_and(|l| l > max)
    {
        return too_large();
    }
    let part = dir.join(format!(".{name}.part"));
    let write = async {
        let mut file = tokio::fs::File::create(&part)
            .await
            .map_err(|e| format!("cannot create the file: {e}"))?;
        let mut written: u64 = 0;
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| format!("the upload broke off: {e}"))?;
            written += chunk.remaining() as u64;
            if written > max {
                return Err("too large".to_string());
            }
            while chunk.has_remaining() {
                let piece = chunk.chunk().to_vec();
                chunk.advance(piece.len());
                file.write_all(&piece)
                    .await
                    .map_err(|e| format!("writing failed: {e}"))?;
            }
        }
        file.sync_all().await.map_err(|e| format!("writing failed: {e}"))?;
        Ok(written)
    };
    let written = tokio::time::timeout(UPLOAD_TIMEOUT, write).await;
    let result = match written {
        Ok(Ok(bytes)) => tokio::fs::rename(&part, dir.join(&name))
            .await
            .map(|()| bytes)
            .map_err(|e| format!("the file could not be put in place: {e}")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timeout".into()),
    };
    match result {
        Ok(bytes) => {
            tracing::info!(file = %name, bytes, "web: update file uploaded");
            ok(json!({"name": name, "bytes": bytes}))
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            match e.as_str() {
                "too large" => too_large(),
                "timeout" => error(
                    StatusCode::REQUEST_TIMEOUT,
                    "the upload took longer than 10 minutes",
                    "check the connection to the appliance and upload again",
                ),
                _ => error(
                    StatusCode::BAD_REQUEST,
                    &e,
                    "check free disk space on the Dashboard and upload again",
                ),
            }
        }
    }
}

fn vehicles(state: &State) -> warp::reply::Response {
    let plane = &state.services.plane;
    let mut out = serde_json::Map::new();
    for (protocol, enabled) in [
        (Protocol::Gbt32960, state.services.gbt32960_enabled),
        (Protocol::Jt808, state.services.jt808_enabled),
    ] {
        let name = protocol.name();
        let online = plane.online(protocol);
        let online_set: std::collections::HashSet<&str> = online.iter().map(String::as_str).collect();
        let mut list: Vec<Value> = Vec::new();
        for id in &online {
            let data = state.live.vehicle(name, id);
            list.push(json!({"id": id, "online": true, "data": data}));
        }
        for data in state.live.vehicles().into_iter().filter(|v| v.protocol == name) {
            if list.len() >= 2000 {
                break;
            }
            if !online_set.contains(data.id.as_str()) {
                list.push(json!({"id": data.id, "online": false, "data": data}));
            }
        }
        out.insert(
            name.to_string(),
            json!({"enabled": enabled, "online": online.len(), "vehicles": list}),
        );
    }
    ok(Value::Object(out))
}

/// `GET /api/registry?query=..&manual=true|false&limit=..&offset=..`: a page of the registry.
async fn registry_list(state: &State, request: &Request) -> warp::reply::Response {
    let number = |k: &str| request.query.get(k).and_then(|v| v.parse::<usize>().ok());
    let query = crate::fusion::registry::ListQuery {
        query: request.query.get("query").filter(|q| !q.is_empty()).cloned(),
        manual: request.query.get("manual").and_then(|m| m.parse().ok()),
        limit: number("limit"),
        offset: number("offset"),
    };
    match state.services.registry.list(query).await {
        Ok(page) => ok(json!({
            "total": page.total,
            "max_entries": state.services.registry.max_entries(),
            "vehicles": page.vehicles,
        })),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the registry could not be read: {e}"),
            "try again; if it persists, see the Logs page",
        ),
    }
}

/// `GET /api/passages?query=..&anomaly=..&match=..&limit=..`: recent passages, newest first,
/// from the fusion service's [`crate::fusion::FusionService::list`] (as `passages.list`), with the
/// fusion counters.
fn passages_list(state: &State, request: &Request) -> warp::reply::Response {
    let Some(fusion) = &state.services.fusion else {
        return error(
            StatusCode::NOT_FOUND,
            "fusion is not configured",
            "add a `fusion` section (and `edge.site`) to the configuration",
        );
    };
    let text = |k: &str| request.query.get(k).filter(|v| !v.is_empty()).cloned();
    let limit = match request.query.get("limit").filter(|l| !l.is_empty()) {
        None => None,
        Some(l) => match l.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("limit: `{l}` is not a number"),
                    "give a row count, e.g. limit=100",
                )
            }
        },
    };
    let query = crate::fusion::PassageQuery {
        query: text("query"),
        anomaly: text("anomaly"),
        match_kind: text("match"),
        limit,
    };
    match fusion.list(&query) {
        Ok(page) => ok(json!({
            "total": page.total,
            "passages": page.passages,
            "metrics": state.services.metrics.fusion.snapshot(),
        })),
        Err(e) => error(StatusCode::BAD_REQUEST, &e, "fix the filter and try again"),
    }
}

fn no_jt808() -> warp::reply::Response {
    error(
        StatusCode::NOT_FOUND,
        "the JT/T 808 gateway is not configured",
        "add a `jt808` section to the configuration to provision terminals",
    )
}

/// `GET /api/jt808/terminals`: the provisioned terminals (the `jt808.terminals` listing).
async fn jt808_terminals(state: &State) -> warp::reply::Response {
    let Some(service) = &state.services.jt808 else {
        return no_jt808();
    };
    match service.list(None).await {
        Ok(list) => ok(json!(list)),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the terminals could not be read: {e}"),
            "try again; if it persists, see the Logs page",
        ),
    }
}

/// `GET /api/registry/export`: the whole registry as a CSV download.
async fn registry_export(state: &State) -> warp::reply::Response {
    match state.services.registry.export_csv().await {
        Ok(csv) => {
            let mut r = warp::reply::Response::new(csv.into());
            let h = r.headers_mut();
            h.insert("content-type", HeaderValue::from_static("text/csv; charset=utf-8"));
            let name = format!(
                "attachment; filename=\"registry-{}.csv\"",
                state.services.plane.edge().edge_id
            );
            if let Ok(v) = HeaderValue::from_str(&name) {
                h.insert("content-disposition", v);
            }
            r
        }
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the registry could not be exported: {e}"),
            "try again; if it persists, see the Logs page",
        ),
    }
}

/// `POST /api/registry/import` with a CSV body: the registry's own import (no MQTT door exists
/// for files; CONTRACT 4 gives the page the CSV import).
async fn registry_import(state: &State, request: &Request, body: Body) -> warp::reply::Response {
    let limit = crate::fusion::registry::MAX_IMPORT_BYTES as u64;
    let csv = match read_body(request, body, limit, UPLOAD_TIMEOUT).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    match state.services.registry.import_csv(csv.to_vec()).await {
        Ok(report) => {
            tracing::info!(
                rows = report.rows,
                created = report.created,
                updated = report.updated,
                errors = report.errors_total,
                "web: registry CSV imported"
            );
            ok(json!(report))
        }
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            &format!("the CSV was not imported: {e}"),
            "check the file's header line (plate,plate_color,vin,phone,tid) and import it again",
        ),
    }
}

/// Sends a command to `target` through the command plane as a job.
async fn command(
    state: &Arc<State>,
    request: &Request,
    body: Body,
    session: &Session,
    target: Target,
) -> warp::reply::Response {
    let document = match read_json(request, body).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    start_job(state, session, target, document).await
}

/// Runs `document` as a command on the command plane as a job (see [`command`]).
async fn start_job(
    state: &Arc<State>,
    session: &Session,
    target: Target,
    mut document: Value,
) -> warp::reply::Response {
    let running = state
        .jobs
        .lock()
        .map(|j| j.values().filter(|j| j.outcome.is_none()).count())
        .unwrap_or(0);
    if running >= MAX_RUNNING_JOBS {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("{running} actions are still running"),
            "wait until one of them has finished (see its progress), then try again",
        );
    }
    let id = state.next_id.fetch_add(1, Relaxed);
    let request_id = format!("web-{}-{id}", state.run_tag);
    document["request_id"] = json!(request_id);
    let (label, is_device) = match &target {
        Target::Edge => (format!("edge: {}", document["action"].as_str().unwrap_or("?")), false),
        Target::Device { protocol, device } => {
            let what = document["action"]
                .as_str()
                .or(document["msg"].as_str())
                .or(document["Action"].as_str())
                .map(str::to_string)
                .or_else(|| document["header"]["msg_id"].as_u64().map(|m| format!("0x{m:04X}")))
                .unwrap_or_else(|| "command".into());
            (format!("{} {device}: {what}", protocol.name()), true)
        }
    };
    if is_device && document.get("ttl_s").is_none() {
        document["ttl_s"] = json!(PAGE_COMMAND_TTL_S);
    }
    let job = Job {
        id,
        label: label.clone(),
        request_id: request_id.clone(),
        user: session.user.clone(),
        started: Instant::now(),
        started_at: rfc3339_ms(now_ms()),
        outcome: None,
    };
    if let Ok(mut jobs) = state.jobs.lock() {
        while jobs.len() >= MAX_JOBS {
            let oldest_done = jobs.iter().find(|(_, j)| j.outcome.is_some()).map(|(k, _)| *k);
            match oldest_done {
                Some(k) => jobs.remove(&k),
                None => break,
            };
        }
        jobs.insert(id, job);
    }
    tracing::info!(user = %session.user, job = id, %request_id, "web: {label}");
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let plane = state.services.plane.clone();
    let jobs = state.jobs.clone();
    state.services.core.spawn(async move {
        let outcome = plane.submit_and_wait(target, &document, JOB_LIMIT).await;
        let shown = outcome_json(outcome, is_device);
        if let Ok(mut j) = jobs.lock() {
            if let Some(job) = j.get_mut(&id) {
                job.outcome = Some(shown);
            }
        }
        let _ = done_tx.send(());
    });
    let _ = tokio::time::timeout(JOB_ANSWER_WITHIN, done_rx).await;
    let job = state.jobs.lock().ok().and_then(|j| j.get(&id).map(Job::to_json));
    match job {
        Some(j) if j["state"] == "done" => ok(j),
        Some(j) => reply(StatusCode::ACCEPTED, &j),
        None => error(StatusCode::INTERNAL_SERVER_ERROR, "the job was lost", "try again"),
    }
}

/// How a command's end is shown: `ok`, `result`, `answer` or `error`, and what to do next.
fn outcome_json(outcome: Result<Option<Outcome>, crate::command::CommandError>, device: bool) -> Value {
    match outcome {
        Ok(Some(Outcome::Answer(answer))) => json!({"ok": true, "result": "answer", "answer": answer}),
        Ok(Some(Outcome::Rejected(reason))) => json!({
            "ok": false, "result": "rejected", "error": reason,
            "hint": "correct what the message names and send it again",
        }),
        Ok(Some(Outcome::Timeout)) => json!({
            "ok": false, "result": "timeout", "error": "the device did not answer",
            "hint": "check the device's link and try again",
        }),
        Ok(Some(Outcome::Expired)) => json!({
            "ok": false, "result": "expired",
            "error": format!("the device was not connected within {PAGE_COMMAND_TTL_S} s"),
            "hint": "check that it is online, then send the command again",
        }),
        Ok(Some(Outcome::Failed(reason))) => json!({
            "ok": false, "result": "failed", "error": reason,
            "hint": "the previous state was kept; read the error, fix its cause and try again",
        }),
        Ok(None) => json!({
            "ok": false, "result": "pending",
            "error": if device { "no result yet: the device has not finished" } else { "no result yet" },
            "hint": "the command still ends in one result on the response topic; look at the Logs page",
        }),
        Err(e) => json!({
            "ok": false, "result": "rejected", "error": e.to_string(),
            "hint": "try again in a moment",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        let q = parse_query("level=warn&module=roadedge%3A%3Areader&q=link+up&empty=");
        assert_eq!(q["module"], "roadedge::reader");
        assert_eq!(q["q"], "link up");
        assert_eq!(q["empty"], "");
        assert!(parse_query("bad=%zz").is_empty());
    }

    #[test]
    fn every_outcome_says_what_to_do_next_unless_it_succeeded() {
        for outcome in [Outcome::Rejected("x".into()), Outcome::Timeout, Outcome::Expired] {
            let v = outcome_json(Ok(Some(outcome)), true);
            assert_eq!(v["ok"], false);
            assert!(v["hint"].as_str().is_some_and(|h| !h.is_empty()), "{v}");
        }
        assert!(outcome_json(Ok(None), true)["hint"].is_string());
        assert_eq!(outcome_json(Ok(Some(Outcome::Answer(json!(1)))), false)["ok"], true);
    }

    #[test]
    fn the_session_cookie_is_http_only_strict_and_secure_under_tls() {
        let c = cookie_header("abc", true, false);
        let c = c.to_str().unwrap();
        for part in [
            "roadedge_session=abc",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(!cookie_header("abc", false, false).to_str().unwrap().contains("Secure"));
        assert!(cookie_header("", false, true).to_str().unwrap().contains("Max-Age=0"));
    }
}
