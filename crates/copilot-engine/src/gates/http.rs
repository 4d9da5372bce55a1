//! Small HTTP helpers shared by the HTTP gates.

use std::time::{Duration, Instant};

use serde_json::Value;

/// `base` + `path`, with exactly one slash between them.
pub fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// The answer to one request.
pub struct Answer {
    pub status: u16,
    pub body: Option<Value>,
    pub text: String,
    pub elapsed: Duration,
}

/// A transport error with its causes ("error sending request: connection refused").
pub fn describe(e: reqwest::Error) -> String {
    describe_ref(&e.without_url())
}

/// The same, for an error that is only borrowed (its URL, if any, is kept out).
pub fn describe_ref(e: &reqwest::Error) -> String {
    let text = copilot_core::http::error_chain(e);
    match e.url() {
        Some(url) => text.replace(&format!(" for url ({url})"), ""),
        None => text,
    }
}

/// A request that got no answer.
#[derive(Clone, Debug)]
pub struct Transport {
    pub message: String,
    /// No connection could be made (refused, no route, the name does not
    /// resolve): the target is out of reach, not slow or broken.
    pub unreachable: bool,
}

impl Transport {
    pub fn from_reqwest(e: reqwest::Error) -> Self {
        Transport {
            unreachable: e.is_connect(),
            message: describe(e),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// How many connection failures in a row, with no answer in between, make
/// a gate stop sending and report its target out of reach.
pub const UNREACHABLE_AFTER: usize = 3;

/// The host and port of a URL, for messages.
pub fn host_of(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => url.to_string(),
        },
        Err(_) => url.to_string(),
    }
}

/// The verdict for a service that cannot be reached: one line naming the
/// host and the cause, `error`, exit 3.
pub fn unreachable(base: &str, cause: &Transport, evidence: Value) -> super::Verdict {
    // The innermost cause says it best ("Connection refused", "failed to
    // look up address information"); the evidence keeps the whole chain.
    let root = cause.message.rsplit(": ").next().unwrap_or(&cause.message);
    super::Verdict::unreachable(format!("cannot reach {}: {root}", host_of(base)), evidence)
}

/// Send a request; `Err` is a transport failure (refused, timed out...).
pub async fn send(req: reqwest::RequestBuilder) -> Result<Answer, Transport> {
    let start = Instant::now();
    let resp = req.send().await.map_err(Transport::from_reqwest)?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(Transport::from_reqwest)?;
    Ok(Answer {
        status,
        body: serde_json::from_str(&text).ok(),
        text,
        elapsed: start.elapsed(),
    })
}

/// The first `n` characters of a response, for evidence.
pub fn excerpt(text: &str, n: usize) -> String {
    let mut s: String = text.chars().take(n).collect();
    if text.chars().count() > n {
        s.push('…');
    }
    s
}
