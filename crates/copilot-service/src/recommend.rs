//! Recommendations: deterministic rules over recent update records and the
//! shop's settings, turned into actions for a merchant.

use chrono::{DateTime, Duration, NaiveTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::ApiVersion;
use super::records::{self, Platform, Severity, UpdateKind, UpdateRecord, UpdateStatus};
use copilot_db::Pool;

/// One action for a merchant, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recommendation {
    /// Stable for the same rule and records: `rec_<hash>`.
    pub id: String,
    pub rule: Rule,
    pub severity: Severity,
    pub title: String,
    pub rationale: String,
    pub actions: Vec<String>,
    /// Ids of the update records this is based on (empty for configuration rules).
    pub based_on: Vec<String>,
    pub valid_until: DateTime<Utc>,
}

/// The response of `GET /api/recommendations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Recommendations for a shop")]
pub struct RecommendationsResponse {
    pub shop: String,
    pub generated_at: DateTime<Utc>,
    pub api_version: String,
    pub recommendations: Vec<Recommendation>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    CoreUpdateInProgress,
    CoreUpdateReview,
    SpamUpdateAudit,
    SearchIncidentExternal,
    AdsPlatformIncidentHold,
    ApiVersionExpiring,
    ApiVersionStale,
    ApiDeprecation,
}

/// What the rules know about a shop.
#[derive(Clone, Debug)]
pub struct ShopContext {
    pub shop: String,
    /// Platforms the shop uses; empty means all.
    pub platforms: Vec<Platform>,
    pub api_version: ApiVersion,
}

impl ShopContext {
    fn uses(&self, p: Platform) -> bool {
        self.platforms.is_empty() || self.platforms.contains(&p)
    }
}

/// How far back the rules look for ended updates.
const LOOKBACK_DAYS: i64 = 45;

/// Is this a valid `*.myshopify.com` shop domain?
pub fn valid_shop(shop: &str) -> bool {
    let Some(name) = shop.strip_suffix(".myshopify.com") else {
        return false;
    };
    !name.is_empty()
        && name.len() <= 60
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
}

/// The records a shop's recommendations at `now` are computed from.
async fn recent_records(pool: &Pool, now: DateTime<Utc>) -> Result<Vec<UpdateRecord>, sqlx::Error> {
    let kinds = [
        UpdateKind::CoreUpdate,
        UpdateKind::SpamUpdate,
        UpdateKind::SearchIncident,
        UpdateKind::PlatformIncident,
        UpdateKind::ApiDeprecation,
    ];
    records::relevant(pool, &kinds, now - Duration::days(LOOKBACK_DAYS), 500).await
}

/// What the records say for every shop at one instant: the record rules in
/// listing order, each serialised once. A shop's answer is then a filter
/// by the platforms it uses, its API version's rule put in its place, and
/// the bytes copied: the same bytes [`recommend`] would produce at `now`.
#[derive(Debug)]
pub struct Prepared {
    pub now: DateTime<Utc>,
    rules: Vec<(Platform, Recommendation, Box<serde_json::value::RawValue>)>,
    /// Every shop's settings (the same revision covers them), so a shop seen
    /// for the first time costs no query.
    shops: std::collections::HashMap<String, ShopSettings>,
}

/// What a shop set: the platforms it uses (empty: all) and its API version.
#[derive(Clone, Debug, Default)]
pub struct ShopSettings {
    pub platforms: Vec<Platform>,
    pub api_version: Option<ApiVersion>,
}

/// A response whose recommendations are already serialised; its fields and
/// their order are [`RecommendationsResponse`]'s.
#[derive(Serialize)]
struct PreparedResponse<'a> {
    shop: &'a str,
    generated_at: DateTime<Utc>,
    api_version: String,
    recommendations: Vec<&'a serde_json::value::RawValue>,
}

fn raw(r: &Recommendation) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(r).expect("recommendations serialise")
}

impl Prepared {
    /// Read the records and the shops' settings, and apply the rules that
    /// depend on the records alone.
    pub async fn load(pool: &Pool, now: DateTime<Utc>) -> Result<Prepared, sqlx::Error> {
        type ShopRow = (String, sqlx::types::Json<Vec<String>>, Option<String>);
        let rows: Vec<ShopRow> = copilot_db::on_pool!(pool, p => sqlx::query_as(
            "SELECT shop, platforms, api_version FROM shops"
        ).fetch_all(p).await)?;
        let mut prepared = Prepared::from_records(&recent_records(pool, now).await?, now);
        prepared.shops = rows
            .into_iter()
            .map(|(shop, platforms, version)| {
                let settings = ShopSettings {
                    platforms: platforms
                        .0
                        .iter()
                        .filter_map(|p| Platform::parse(p))
                        .collect(),
                    api_version: version.and_then(|v| ApiVersion::parse(&v)),
                };
                (shop, settings)
            })
            .collect();
        Ok(prepared)
    }

    /// A shop's settings; a shop that set none uses every platform.
    pub fn shop(&self, shop: &str) -> ShopSettings {
        self.shops.get(shop).cloned().unwrap_or_default()
    }

    pub fn from_records(recent: &[UpdateRecord], now: DateTime<Utc>) -> Prepared {
        let mut rules = record_rules(recent, now);
        rules.sort_by(|a, b| listing_order(&a.1, &b.1));
        Prepared {
            now,
            rules: rules
                .into_iter()
                .map(|(platform, r)| {
                    let json = raw(&r);
                    (platform, r, json)
                })
                .collect(),
            shops: std::collections::HashMap::new(),
        }
    }

    /// The serialised response for the shop.
    pub fn answer(&self, ctx: &ShopContext) -> Vec<u8> {
        let api = api_version_rule(ctx.api_version, self.now);
        let api_json = api.as_ref().map(raw);
        let mut pending = api.as_ref().zip(api_json.as_deref());
        let mut list = Vec::with_capacity(self.rules.len() + 1);
        for (platform, r, json) in &self.rules {
            if !ctx.uses(*platform) {
                continue;
            }
            if let Some((a, a_json)) = pending
                && listing_order(a, r).is_le()
            {
                list.push(a_json);
                pending = None;
            }
            list.push(json.as_ref());
        }
        if let Some((_, a_json)) = pending {
            list.push(a_json);
        }
        serde_json::to_vec(&PreparedResponse {
            shop: &ctx.shop,
            generated_at: self.now,
            api_version: ctx.api_version.to_string(),
            recommendations: list,
        })
        .expect("recommendations serialise")
    }
}

/// Compute the recommendations for a shop at `now`.
pub async fn recommend(
    pool: &Pool,
    ctx: &ShopContext,
    now: DateTime<Utc>,
) -> Result<RecommendationsResponse, sqlx::Error> {
    let recent = recent_records(pool, now).await?;
    let mut recs = evaluate(ctx, &recent, now);
    recs.sort_by(listing_order);
    Ok(RecommendationsResponse {
        shop: ctx.shop.clone(),
        generated_at: now,
        api_version: ctx.api_version.to_string(),
        recommendations: recs,
    })
}

fn rec(
    rule: Rule,
    severity: Severity,
    title: String,
    rationale: String,
    actions: &[&str],
    based_on: &[&UpdateRecord],
    valid_until: DateTime<Utc>,
) -> Recommendation {
    let mut ids: Vec<String> = based_on.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    let mut h = Sha256::new();
    h.update(format!("{rule:?}"));
    for id in &ids {
        h.update([0]);
        h.update(id.as_bytes());
    }
    Recommendation {
        id: format!("rec_{}", &format!("{:x}", h.finalize())[..16]),
        rule,
        severity,
        title,
        rationale,
        actions: actions.iter().map(|s| s.to_string()).collect(),
        based_on: ids,
        valid_until,
    }
}

/// The rules, as a pure function of the records and the shop.
pub fn evaluate(
    ctx: &ShopContext,
    recent: &[UpdateRecord],
    now: DateTime<Utc>,
) -> Vec<Recommendation> {
    let mut out: Vec<Recommendation> = record_rules(recent, now)
        .into_iter()
        .filter(|(platform, _)| ctx.uses(*platform))
        .map(|(_, r)| r)
        .collect();
    out.extend(api_version_rule(ctx.api_version, now));
    out
}

/// The order recommendations are listed in: most severe first.
pub fn listing_order(a: &Recommendation, b: &Recommendation) -> std::cmp::Ordering {
    b.severity
        .cmp(&a.severity)
        .then(a.rule.cmp(&b.rule))
        .then(a.id.cmp(&b.id))
}

/// The rules that follow from the records alone, each with the platform a
/// shop must use for it to apply. They are the same for every shop, so they
/// are computed once per change of the records ([`crate::recommend_cache`]).
pub fn record_rules(
    recent: &[UpdateRecord],
    now: DateTime<Utc>,
) -> Vec<(Platform, Recommendation)> {
    let mut out = Vec::new();
    let tomorrow = now + Duration::days(1);
    let ongoing = |r: &&UpdateRecord| r.ended_at.is_none() && r.status == UpdateStatus::Ongoing;
    let mut google = Vec::new();

    {
        // Core update rolling out: freeze structural changes, judge nothing yet.
        for r in recent
            .iter()
            .filter(|r| r.kind == UpdateKind::CoreUpdate)
            .filter(ongoing)
        {
            google.push(rec(
                Rule::CoreUpdateInProgress,
                Severity::High,
                format!("{} is rolling out: freeze structural and URL changes", r.title),
                format!(
                    "Google started the {} on {}. Rankings move for days while it rolls out; changes to site structure, URLs or templates now would be confounded with the update.",
                    r.title,
                    r.started_at.unwrap_or(r.published_at).format("%Y-%m-%d")
                ),
                &[
                    "Freeze URL, navigation and template changes until the rollout completes",
                    "Do not judge the effect of recent SEO changes until the rollout completes",
                    "Annotate analytics with the rollout start date",
                ],
                &[r],
                tomorrow,
            ));
        }
        // Core update ended a week or more ago: time to compare.
        for r in recent.iter().filter(|r| r.kind == UpdateKind::CoreUpdate) {
            let Some(ended) = r.ended_at else { continue };
            let age = now - ended;
            if age >= Duration::days(7) && age <= Duration::days(LOOKBACK_DAYS) {
                google.push(rec(
                    Rule::CoreUpdateReview,
                    Severity::Medium,
                    format!("Compare search performance before and after the {}", r.title),
                    format!(
                        "The {} finished on {}; a week of data after it is now available.",
                        r.title,
                        ended.format("%Y-%m-%d")
                    ),
                    &[
                        "In Search Console, compare the two weeks before the rollout with the week after it ended",
                        "Review pages that lost clicks against Google's helpful-content guidance",
                    ],
                    &[r],
                    ended + Duration::days(LOOKBACK_DAYS),
                ));
            }
        }
        // Spam update: audit.
        let spam: Vec<&UpdateRecord> = recent
            .iter()
            .filter(|r| r.kind == UpdateKind::SpamUpdate)
            .filter(|r| r.ended_at.is_none_or(|e| now - e <= Duration::days(30)))
            .collect();
        for r in spam {
            let live = r.ended_at.is_none();
            google.push(rec(
                Rule::SpamUpdateAudit,
                if live { Severity::High } else { Severity::Medium },
                format!("Audit the store against Google's spam policies ({})", r.title),
                format!("Google {} the {}.", if live { "is rolling out" } else { "recently finished" }, r.title),
                &[
                    "Check for scaled or auto-generated product content, expired-domain and site-reputation abuse",
                    "Review paid and exchanged links pointing to the store",
                ],
                &[r],
                r.ended_at.map_or(tomorrow, |e| e + Duration::days(30)),
            ));
        }
        // Crawling/indexing/serving trouble on Google's side: not the shop's fault.
        for r in recent
            .iter()
            .filter(|r| r.kind == UpdateKind::SearchIncident)
        {
            let affects = r
                .surfaces
                .iter()
                .any(|s| matches!(s.as_str(), "Crawling" | "Indexing" | "Serving"))
                || r.surfaces.is_empty();
            let current = r.ended_at.is_none_or(|e| now - e <= Duration::days(2));
            if affects && current {
                let live = r.ended_at.is_none();
                google.push(rec(
                    Rule::SearchIncidentExternal,
                    if live { Severity::High } else { Severity::Medium },
                    format!("Search traffic changes are caused externally: {}", r.title),
                    format!(
                        "Google reports {} affecting {}. Drops in impressions or indexing in this period come from Google, not from the store.",
                        if live { "an ongoing incident" } else { "a recent incident" },
                        if r.surfaces.is_empty() { "Search".to_string() } else { r.surfaces.join(", ") }
                    ),
                    &[
                        "Mark the traffic change as externally caused in reports",
                        "Do not roll back recent site changes because of it",
                    ],
                    &[r],
                    r.ended_at.map_or(tomorrow, |e| e + Duration::days(2)),
                ));
            }
        }
    }
    out.extend(google.into_iter().map(|r| (Platform::GoogleSearch, r)));

    // Ads platform incident: hold automation.
    for r in recent
        .iter()
        .filter(|r| r.kind == UpdateKind::PlatformIncident && r.platform.is_ads())
        .filter(ongoing)
    {
        out.push((r.platform, rec(
            Rule::AdsPlatformIncidentHold,
            Severity::High,
            format!("Hold automated bid and budget changes on {}", r.platform),
            format!("{} reports an ongoing incident: {}. Performance data is unreliable until it is resolved.", r.platform, r.title),
            &[
                "Pause automated bid and budget rules on the affected platform",
                "Do not judge campaign changes made during the incident",
            ],
            &[r],
            tomorrow,
        )));
    }

    // Deprecations announced by the platforms the shop uses.
    for r in recent
        .iter()
        .filter(|r| r.kind == UpdateKind::ApiDeprecation)
    {
        if now - r.published_at <= Duration::days(LOOKBACK_DAYS) {
            out.push((
                r.platform,
                rec(
                    Rule::ApiDeprecation,
                    Severity::Medium,
                    format!("Plan for a {} deprecation: {}", r.platform, r.title),
                    "A feature or API the store may depend on is being deprecated.".into(),
                    &[
                        "Check whether the store's apps or themes use it",
                        "Schedule the migration before the sunset date",
                    ],
                    &[r],
                    r.published_at + Duration::days(LOOKBACK_DAYS),
                ),
            ));
        }
    }
    out
}

/// The rule about the shop's configured Shopify API version, if it applies.
pub fn api_version_rule(v: ApiVersion, now: DateTime<Utc>) -> Option<Recommendation> {
    let expires = v.supported_until().and_time(NaiveTime::MIN).and_utc();
    let left = expires - now;
    if left <= Duration::days(90) {
        let days = left.num_days().max(0);
        Some(rec(
            Rule::ApiVersionExpiring,
            if left <= Duration::days(30) {
                Severity::Critical
            } else {
                Severity::High
            },
            format!("Shopify API version {v} expires in {days} days"),
            format!(
                "Shopify supports a version for twelve months; {v} stops being supported on {}.",
                expires.format("%Y-%m-%d")
            ),
            &[
                "Upgrade SHOPIFY_API_VERSION to the latest stable version and test webhooks and queries",
            ],
            &[],
            expires,
        ))
    } else if now - v.released().and_time(NaiveTime::MIN).and_utc() > Duration::days(274) {
        Some(rec(
            Rule::ApiVersionStale,
            Severity::Medium,
            format!("Shopify API version {v} is more than nine months old"),
            "Upgrading before the last quarter of support leaves time to test.".into(),
            &["Plan the upgrade of SHOPIFY_API_VERSION this quarter"],
            &[],
            expires - Duration::days(90),
        ))
    } else {
        None
    }
}

/// The JSON Schema of the response, as published in `schemas/recommendations.schema.json`.
pub fn schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<RecommendationsResponse>();
    serde_json::to_value(schema).expect("schema serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn record(id: &str, platform: Platform, kind: UpdateKind, ended: Option<&str>) -> UpdateRecord {
        UpdateRecord {
            id: id.into(),
            source: "test".into(),
            platform,
            kind,
            title: format!("update {id}"),
            url: None,
            summary: None,
            published_at: at("2026-11-01T00:00:00Z"),
            updated_at: at("2026-11-20T00:00:00Z"),
            started_at: Some(at("2026-11-02T00:00:00Z")),
            ended_at: ended.map(at),
            status: if ended.is_some() {
                UpdateStatus::Resolved
            } else {
                UpdateStatus::Ongoing
            },
            severity: Severity::Medium,
            surfaces: Vec::new(),
            raw_hash: "0".repeat(64),
            revision: 1,
            fetched_at: at("2026-11-20T00:00:00Z"),
            parser_version: "1".into(),
        }
    }

    #[test]
    fn a_prepared_answer_is_byte_for_byte_the_computed_one() {
        let now = at("2026-11-24T11:00:00Z");
        let recent = vec![
            record(
                "core-live",
                Platform::GoogleSearch,
                UpdateKind::CoreUpdate,
                None,
            ),
            record(
                "core-done",
                Platform::GoogleSearch,
                UpdateKind::CoreUpdate,
                Some("2026-11-10T00:00:00Z"),
            ),
            record("spam", Platform::GoogleSearch, UpdateKind::SpamUpdate, None),
            record(
                "incident",
                Platform::GoogleSearch,
                UpdateKind::SearchIncident,
                None,
            ),
            record(
                "ads-down",
                Platform::GoogleAds,
                UpdateKind::PlatformIncident,
                None,
            ),
            record(
                "meta-down",
                Platform::Meta,
                UpdateKind::PlatformIncident,
                None,
            ),
            record(
                "shopify-api",
                Platform::Shopify,
                UpdateKind::ApiDeprecation,
                None,
            ),
        ];
        let prepared = Prepared::from_records(&recent, now);
        let shops = [
            (vec![], "2026-10"),
            (vec![Platform::GoogleAds], "2026-01"),
            (vec![Platform::Meta, Platform::Shopify], "2025-04"),
            (vec![Platform::GoogleSearch], "2026-07"),
        ];
        for (platforms, version) in shops {
            let ctx = ShopContext {
                shop: "dev-hotrod.myshopify.com".into(),
                platforms,
                api_version: ApiVersion::parse(version).unwrap(),
            };
            let mut recs = evaluate(&ctx, &recent, now);
            recs.sort_by(listing_order);
            assert!(!recs.is_empty());
            let computed = serde_json::to_vec(&RecommendationsResponse {
                shop: ctx.shop.clone(),
                generated_at: now,
                api_version: ctx.api_version.to_string(),
                recommendations: recs,
            })
            .unwrap();
            assert_eq!(
                String::from_utf8(prepared.answer(&ctx)).unwrap(),
                String::from_utf8(computed).unwrap(),
                "{ctx:?}"
            );
        }
    }
}
