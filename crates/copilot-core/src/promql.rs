//! Reading Prometheus data: the text exposition a service serves on
//! `/metrics`, a small expression language evaluated over two scrapes of it,
//! and instant queries against a Prometheus server's HTTP API.
//!
//! The expression language (analysis metrics with `source: metrics`) is a
//! subset of PromQL whose every expression means "over the window":
//!
//! - `name{label="v",other=~"re"}`: the increase of the matching counters;
//! - `a{..} / b{..}`: the ratio of two increases (an error rate);
//! - `histogram_quantile(0.95, name{..})`: the quantile of the observations
//!   that a histogram's buckets gained.
//!
//! Matchers are `=`, `!=`, `=~` and `!~`; regular expressions are anchored as
//! in PromQL.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use regex::Regex;

/// One line of the text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parse the Prometheus text exposition format (version 0.0.4). Comments and
/// timestamps are skipped; a malformed line is an error naming its number.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sample = parse_sample(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        out.push(sample);
    }
    Ok(out)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let mut c = Cursor::new(line);
    let name = c.ident().ok_or("expected a metric name")?;
    let mut labels = BTreeMap::new();
    if c.eat('{') {
        loop {
            c.skip_ws();
            if c.eat('}') {
                break;
            }
            let key = c.ident().ok_or("expected a label name")?;
            c.skip_ws();
            if !c.eat('=') {
                return Err(format!("expected `=` after label {key}"));
            }
            let value = c.string()?;
            labels.insert(key, value);
            c.skip_ws();
            if !c.eat(',') {
                c.skip_ws();
                if !c.eat('}') {
                    return Err("expected `,` or `}` in labels".into());
                }
                break;
            }
        }
    }
    c.skip_ws();
    let rest = c.rest();
    let value = rest.split_whitespace().next().ok_or("missing value")?;
    let value = parse_float(value).ok_or_else(|| format!("`{value}` is not a number"))?;
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// A sample value as Prometheus writes it (`NaN`, `+Inf` and `-Inf` included).
pub fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// A character cursor over one line, shared by both parsers.
struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, ch: char) -> bool {
        if self.peek() == Some(ch) {
            self.pos += ch.len_utf8();
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, s: &str) -> bool {
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Option<String> {
        let start = self.pos;
        for (i, ch) in self.rest().char_indices() {
            let ok = ch == '_'
                || ch == ':'
                || ch.is_ascii_alphabetic()
                || (i > 0 && ch.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos = start + i + ch.len_utf8();
        }
        (self.pos > start).then(|| self.text[start..self.pos].to_string())
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_ws();
        if !self.eat('"') {
            return Err("expected a quoted value".into());
        }
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, ch)) = chars.next() {
            match ch {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, other)) => out.push(other),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err("unterminated string".into())
    }

    fn number(&mut self) -> Option<f64> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || c == '.' || c == 'e' || c == '-')
        {
            self.pos += 1;
        }
        self.text[start..self.pos].parse().ok()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

#[derive(Clone, Debug)]
struct Matcher {
    label: String,
    op: MatchOp,
    value: String,
    regex: Option<Regex>,
}

impl Matcher {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.label).map_or("", String::as_str);
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => v == self.value,
            (MatchOp::NotEqual, _) => v != self.value,
            (MatchOp::Regex, Some(r)) => r.is_match(v),
            (MatchOp::NotRegex, Some(r)) => !r.is_match(v),
            _ => false,
        }
    }
}

/// A metric name with label matchers.
#[derive(Clone, Debug)]
pub struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
}

impl Selector {
    fn matches(&self, s: &Sample) -> bool {
        s.name == self.metric && self.matchers.iter().all(|m| m.matches(&s.labels))
    }

    fn parse(c: &mut Cursor<'_>) -> Result<Self, String> {
        c.skip_ws();
        let at = c.pos + 1;
        let metric = c
            .ident()
            .ok_or_else(|| format!("column {at}: expected a metric name"))?;
        let mut matchers = Vec::new();
        c.skip_ws();
        if c.eat('{') {
            loop {
                c.skip_ws();
                if c.eat('}') {
                    break;
                }
                let at = c.pos + 1;
                let label = c
                    .ident()
                    .ok_or_else(|| format!("column {at}: expected a label name"))?;
                c.skip_ws();
                let op = if c.eat_str("=~") {
                    MatchOp::Regex
                } else if c.eat_str("!~") {
                    MatchOp::NotRegex
                } else if c.eat_str("!=") {
                    MatchOp::NotEqual
                } else if c.eat('=') {
                    MatchOp::Equal
                } else {
                    return Err(format!(
                        "column {}: expected =, !=, =~ or !~ after `{label}`",
                        c.pos + 1
                    ));
                };
                let at = c.pos + 1;
                let value = c.string().map_err(|e| format!("column {at}: {e}"))?;
                let regex = match op {
                    MatchOp::Regex | MatchOp::NotRegex => Some(
                        Regex::new(&format!("^(?:{value})$"))
                            .map_err(|e| format!("column {at}: bad regular expression: {e}"))?,
                    ),
                    _ => None,
                };
                matchers.push(Matcher {
                    label,
                    op,
                    value,
                    regex,
                });
                c.skip_ws();
                if !c.eat(',') {
                    c.skip_ws();
                    if !c.eat('}') {
                        return Err(format!("column {}: expected `,` or `}}`", c.pos + 1));
                    }
                    break;
                }
            }
        }
        Ok(Self { metric, matchers })
    }

    /// How much the matching series grew from `before` to `after`; a series
    /// that went down was reset and counts from zero.
    fn increase(&self, before: &[Sample], after: &[Sample]) -> f64 {
        after
            .iter()
            .filter(|s| self.matches(s))
            .map(|s| series_increase(s, before))
            // Not `sum()`: an empty float sum is -0.0.
            .fold(0.0, |a, b| a + b)
    }
}

/// How much one series grew since `before`; one that went down was reset.
fn series_increase(s: &Sample, before: &[Sample]) -> f64 {
    let prev = before
        .iter()
        .find(|b| b.name == s.name && b.labels == s.labels)
        .map_or(0.0, |b| b.value);
    if s.value >= prev {
        s.value - prev
    } else {
        s.value
    }
}

/// An expression over the window between two scrapes.
#[derive(Clone, Debug)]
pub enum Expr {
    Increase(Selector),
    Ratio(Selector, Selector),
    Quantile(f64, Selector),
}

/// What an expression gave: the value, and how many observations it rests on
/// (the denominator of a ratio, the count of a histogram) when that is known.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    pub value: Option<f64>,
    pub observations: Option<f64>,
}

impl FromStr for Expr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut c = Cursor::new(text);
        c.skip_ws();
        let expr = if c.eat_str("histogram_quantile") {
            c.skip_ws();
            if !c.eat('(') {
                return Err(format!("column {}: expected `(`", c.pos + 1));
            }
            c.skip_ws();
            let at = c.pos + 1;
            let q = c
                .number()
                .filter(|q| (0.0..=1.0).contains(q))
                .ok_or_else(|| format!("column {at}: expected a quantile from 0 to 1"))?;
            c.skip_ws();
            if !c.eat(',') {
                return Err(format!("column {}: expected `,`", c.pos + 1));
            }
            let mut sel = Selector::parse(&mut c)?;
            if !sel.metric.ends_with("_bucket") {
                sel.metric.push_str("_bucket");
            }
            c.skip_ws();
            if !c.eat(')') {
                return Err(format!("column {}: expected `)`", c.pos + 1));
            }
            Expr::Quantile(q, sel)
        } else {
            let a = Selector::parse(&mut c)?;
            c.skip_ws();
            if c.eat('/') {
                Expr::Ratio(a, Selector::parse(&mut c)?)
            } else {
                Expr::Increase(a)
            }
        };
        c.skip_ws();
        if !c.rest().is_empty() {
            return Err(format!(
                "column {}: unexpected `{}` (supported: a selector, a ratio of two, or histogram_quantile)",
                c.pos + 1,
                c.rest()
            ));
        }
        Ok(expr)
    }
}

impl Expr {
    /// Evaluate over what happened between two scrapes.
    pub fn eval(&self, before: &[Sample], after: &[Sample]) -> Evaluation {
        match self {
            Expr::Increase(s) => Evaluation {
                value: Some(s.increase(before, after)),
                observations: None,
            },
            Expr::Ratio(num, den) => {
                let d = den.increase(before, after);
                Evaluation {
                    value: (d > 0.0).then(|| num.increase(before, after) / d),
                    observations: Some(d),
                }
            }
            Expr::Quantile(q, sel) => {
                let mut buckets: Vec<(f64, f64)> = Vec::new();
                for s in after.iter().filter(|s| sel.matches(s)) {
                    let Some(le) = s.labels.get("le").and_then(|v| parse_float(v)) else {
                        continue;
                    };
                    let grew = series_increase(s, before);
                    match buckets.iter_mut().find(|b| b.0 == le) {
                        Some(b) => b.1 += grew,
                        None => buckets.push((le, grew)),
                    }
                }
                buckets.sort_by(|x, y| x.0.total_cmp(&y.0));
                let total = buckets.last().map_or(0.0, |b| b.1);
                Evaluation {
                    value: bucket_quantile(*q, &buckets),
                    observations: Some(total),
                }
            }
        }
    }
}

/// PromQL's `histogram_quantile` over cumulative `(le, count)` buckets sorted
/// by bound: linear interpolation inside the bucket the rank falls in; the
/// highest finite bound when it falls in `+Inf`.
fn bucket_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let &(last_le, total) = buckets.last()?;
    if total <= 0.0 || !last_le.is_infinite() {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let lower = prev.0;
            let in_bucket = count - prev.1;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower + (le - lower) * (rank - prev.1) / in_bucket);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn sel(f: &mut fmt::Formatter<'_>, s: &Selector) -> fmt::Result {
            write!(f, "{}", s.metric)?;
            if !s.matchers.is_empty() {
                let parts: Vec<String> = s
                    .matchers
                    .iter()
                    .map(|m| {
                        let op = match m.op {
                            MatchOp::Equal => "=",
                            MatchOp::NotEqual => "!=",
                            MatchOp::Regex => "=~",
                            MatchOp::NotRegex => "!~",
                        };
                        format!("{}{op}{:?}", m.label, m.value)
                    })
                    .collect();
                write!(f, "{{{}}}", parts.join(","))?;
            }
            Ok(())
        }
        match self {
            Expr::Increase(s) => sel(f, s),
            Expr::Ratio(a, b) => {
                sel(f, a)?;
                f.write_str(" / ")?;
                sel(f, b)
            }
            Expr::Quantile(q, s) => {
                write!(f, "histogram_quantile({q}, ")?;
                sel(f, s)?;
                f.write_str(")")
            }
        }
    }
}

/// A PromQL duration for a window (`90s`, `5m`).
pub fn promql_duration(d: Duration) -> String {
    let s = d.as_secs().max(1);
    if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"
# TYPE http_requests_total counter
http_requests_total{route="/api/flags",method="GET",status="200"} 10
http_requests_total{route="/api/flags",method="GET",status="500"} 1
http_requests_total{route="/health",method="GET",status="200"} 50
http_request_duration_seconds_bucket{route="/api/flags",le="0.01"} 5
http_request_duration_seconds_bucket{route="/api/flags",le="0.1"} 10
http_request_duration_seconds_bucket{route="/api/flags",le="+Inf"} 11
"#;
    const AFTER: &str = r#"
http_requests_total{route="/api/flags",method="GET",status="200"} 40
http_requests_total{route="/api/flags",method="GET",status="500"} 11
http_requests_total{route="/api/flags",method="GET",status="503"} 10
http_requests_total{route="/health",method="GET",status="200"} 90
http_request_duration_seconds_bucket{route="/api/flags",le="0.01"} 5
http_request_duration_seconds_bucket{route="/api/flags",le="0.1"} 60
http_request_duration_seconds_bucket{route="/api/flags",le="+Inf"} 61 1700000000000
"#;

    fn eval(q: &str) -> Evaluation {
        let e: Expr = q.parse().unwrap();
        e.eval(
            &parse_exposition(BEFORE).unwrap(),
            &parse_exposition(AFTER).unwrap(),
        )
    }

    #[test]
    fn ratio_of_increases_with_regex_matchers() {
        let e = eval(
            r#"http_requests_total{status=~"5..",route!~"/health.*"} / http_requests_total{route!~"/health.*"}"#,
        );
        // 5xx grew by 10 + 10, everything but /health by 30 + 10 + 10.
        assert_eq!(e.observations, Some(50.0));
        assert!((e.value.unwrap() - 0.4).abs() < 1e-9);
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        // 50 new observations, all in (0.01, 0.1]: the median is halfway.
        let e =
            eval(r#"histogram_quantile(0.5, http_request_duration_seconds{route="/api/flags"})"#);
        assert_eq!(e.observations, Some(50.0));
        assert!((e.value.unwrap() - 0.055).abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn no_traffic_is_no_value() {
        let e = eval(r#"http_requests_total{status="418"} / http_requests_total{status="418"}"#);
        assert_eq!(e.value, None);
    }

    #[test]
    fn a_reset_counter_counts_from_zero() {
        let before = parse_exposition("c 100").unwrap();
        let after = parse_exposition("c 7").unwrap();
        let e: Expr = "c".parse().unwrap();
        assert_eq!(e.eval(&before, &after).value, Some(7.0));
    }

    #[test]
    fn bad_expressions_say_where() {
        let err = "histogram_quantile(2, x)".parse::<Expr>().unwrap_err();
        assert!(err.contains("column 20"), "{err}");
        let err = r#"x{a~"b"}"#.parse::<Expr>().unwrap_err();
        assert!(err.contains("column 4"), "{err}");
        let err = "rate(x[5m])".parse::<Expr>().unwrap_err();
        assert!(err.contains("unexpected"), "{err}");
        assert!(
            parse_exposition("x{a=\"1\"} nope")
                .unwrap_err()
                .contains("line 1")
        );
    }

    #[test]
    fn durations_read_as_promql() {
        assert_eq!(promql_duration(Duration::from_secs(300)), "5m");
        assert_eq!(promql_duration(Duration::from_secs(90)), "90s");
        assert_eq!(promql_duration(Duration::from_secs(7200)), "2h");
    }
}
