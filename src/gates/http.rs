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
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Send a request; `Err` is a transport failure (refused, timed out...).
pub async fn send(req: reqwest::RequestBuilder) -> Result<Answer, String> {
    let start = Instant::now();
    let resp = req.send().await.map_err(describe)?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(describe)?;
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
