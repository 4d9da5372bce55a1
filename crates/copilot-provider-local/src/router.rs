//! The local provider's router: a small HTTP proxy on the arena's port that
//! splits traffic between colours by exact weights (smooth weighted
//! round-robin) and switches instantly. It runs as its own process
//! (`copilot local-router`) so it outlives the command that started it, and
//! takes its routes over an admin port on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

/// One place traffic can go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub slot: String,
    pub addr: SocketAddr,
    pub weight: u32,
}

/// The routing table, as set over the admin port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routes {
    pub backends: Vec<Backend>,
    /// A merchant cohort sent to one backend whatever the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cohort: Option<CohortBackend>,
}

/// The backend of a cohort's shops.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CohortBackend {
    pub name: String,
    pub slot: String,
    pub addr: SocketAddr,
    pub shops: Vec<String>,
}

/// The shop a request is for: `X-Shopify-Shop-Domain`, else the `shop`
/// query parameter (the two ways Shopify names a shop to an app).
fn shop_of(parts: &axum::http::request::Parts) -> Option<String> {
    if let Some(v) = parts.headers.get("x-shopify-shop-domain")
        && let Ok(v) = v.to_str()
    {
        return Some(v.trim().to_ascii_lowercase());
    }
    let query = parts.uri.query()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "shop").then(|| percent_decode(v).to_ascii_lowercase())
    })
}

/// A query string value with its `%XX` escapes and `+` decoded.
fn percent_decode(v: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Smooth weighted round-robin (as in nginx): over any window of `total`
/// picks, each backend is chosen exactly `weight` times, evenly spread.
#[derive(Default)]
struct Balancer {
    routes: Routes,
    current: Vec<i64>,
}

impl Balancer {
    fn set(&mut self, routes: Routes) {
        self.current = vec![0; routes.backends.len()];
        self.routes = routes;
    }

    fn pick(&mut self) -> Option<Backend> {
        let total: i64 = self
            .routes
            .backends
            .iter()
            .map(|b| i64::from(b.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut best = 0;
        for (i, b) in self.routes.backends.iter().enumerate() {
            self.current[i] += i64::from(b.weight);
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        Some(self.routes.backends[best].clone())
    }
}

#[derive(Clone)]
struct RouterState {
    balancer: Arc<Mutex<Balancer>>,
    client: reqwest::Client,
    routes_file: PathBuf,
    stop: watch::Sender<bool>,
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "host",
    "content-length",
];

async fn forward(State(s): State<RouterState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let picked = {
        let mut balancer = s.balancer.lock().expect("balancer");
        let cohort = balancer.routes.cohort.as_ref().and_then(|c| {
            let shop = shop_of(&parts)?;
            c.shops.contains(&shop).then(|| Backend {
                slot: c.slot.clone(),
                addr: c.addr,
                weight: 0,
            })
        });
        cohort.or_else(|| balancer.pick())
    };
    let Some(backend) = picked else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "error": "no release is receiving traffic" })),
        )
            .into_response();
    };
    let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
        return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("http://{}{path}", backend.addr);
    let method = reqwest::Method::from_bytes(parts.method.as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let mut out = s.client.request(method, &url).body(bytes);
    for (k, v) in &parts.headers {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    match out.send().await {
        Ok(resp) => {
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let headers = resp.headers().clone();
            let body: Bytes = resp.bytes().await.unwrap_or_default();
            let mut r = Response::builder().status(status);
            for (k, v) in &headers {
                if !HOP_BY_HOP.contains(&k.as_str()) {
                    r = r.header(k.as_str(), v.as_bytes());
                }
            }
            let mut r = r
                .body(Body::from(body))
                .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response());
            if let Ok(v) = HeaderValue::from_str(&backend.slot) {
                r.headers_mut()
                    .insert(HeaderName::from_static("x-copilot-slot"), v);
            }
            r
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            axum::Json(json!({ "error": format!("{} is unreachable: {e}", backend.slot) })),
        )
            .into_response(),
    }
}

async fn get_routes(State(s): State<RouterState>) -> axum::Json<Routes> {
    axum::Json(s.balancer.lock().expect("balancer").routes.clone())
}

async fn put_routes(
    State(s): State<RouterState>,
    axum::Json(routes): axum::Json<Routes>,
) -> Response {
    let text = serde_json::to_string_pretty(&routes).expect("routes serialize");
    // Persist first (atomically), then apply: the file never lags what is served.
    if let Err(e) = super::write_atomic(&s.routes_file, &text) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot persist routes: {e}"),
        )
            .into_response();
    }
    s.balancer.lock().expect("balancer").set(routes.clone());
    axum::Json(routes).into_response()
}

async fn shutdown(State(s): State<RouterState>) -> StatusCode {
    let _ = s.stop.send(true);
    StatusCode::ACCEPTED
}

/// Serve traffic on `port` and the admin API on `admin_port` until told to stop.
pub async fn serve(port: u16, admin_port: u16, routes_file: PathBuf) -> std::io::Result<()> {
    let routes: Routes = std::fs::read_to_string(&routes_file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let mut balancer = Balancer::default();
    balancer.set(routes);
    let (stop, stop_rx) = watch::channel(false);
    let state = RouterState {
        balancer: Arc::new(Mutex::new(balancer)),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(std::io::Error::other)?,
        routes_file,
        stop,
    };
    let traffic = Router::new().fallback(forward).with_state(state.clone());
    let admin = Router::new()
        .route("/routes", get(get_routes).put(put_routes))
        .route("/shutdown", axum::routing::post(shutdown))
        .with_state(state);
    let tl = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let al = tokio::net::TcpListener::bind(("127.0.0.1", admin_port)).await?;
    let mut rx1 = stop_rx.clone();
    let mut rx2 = stop_rx;
    let t = axum::serve(tl, traffic).with_graceful_shutdown(async move {
        let _ = rx1.wait_for(|s| *s).await;
    });
    let a = axum::serve(al, admin).with_graceful_shutdown(async move {
        let _ = rx2.wait_for(|s| *s).await;
    });
    let (r1, r2) = tokio::join!(t.into_future(), a.into_future());
    r1.and(r2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_exact_and_spread() {
        let mut b = Balancer::default();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        b.set(Routes {
            cohort: None,
            backends: vec![
                Backend {
                    slot: "blue".into(),
                    addr,
                    weight: 90,
                },
                Backend {
                    slot: "green".into(),
                    addr,
                    weight: 10,
                },
            ],
        });
        let picks: Vec<String> = (0..100).map(|_| b.pick().unwrap().slot).collect();
        assert_eq!(picks.iter().filter(|s| *s == "green").count(), 10);
        // Spread: never two greens within five picks.
        let greens: Vec<usize> = picks
            .iter()
            .enumerate()
            .filter(|(_, s)| *s == "green")
            .map(|(i, _)| i)
            .collect();
        assert!(greens.windows(2).all(|w| w[1] - w[0] >= 5), "{greens:?}");
        b.set(Routes {
            cohort: None,
            backends: vec![Backend {
                slot: "green".into(),
                addr,
                weight: 0,
            }],
        });
        assert!(b.pick().is_none());
    }
}
