//! Deciding what kind of update a title describes.

use crate::records::{Platform, UpdateKind};

fn has(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| text.contains(w))
}

/// Classify an update from its title (and summary), for its platform.
///
/// Ranking kinds are told apart by the title, as Google names them: "March
/// 2026 core update", "August 2026 spam update", "reviews update".
pub fn classify(
    platform: Platform,
    title: &str,
    summary: &str,
    categories: &[String],
) -> UpdateKind {
    let t = title.to_lowercase();
    let all = format!(
        "{t} {} {}",
        summary.to_lowercase(),
        categories.join(" ").to_lowercase()
    );
    if has(&t, &["core update"]) {
        return UpdateKind::CoreUpdate;
    }
    if has(&t, &["spam update", "spambrain", "link spam"]) {
        return UpdateKind::SpamUpdate;
    }
    if platform == Platform::GoogleSearch
        && has(
            &t,
            &[
                "ranking",
                "helpful content",
                "reviews update",
                "product reviews",
                "site reputation",
                "page experience update",
            ],
        )
    {
        return UpdateKind::RankingUpdateOther;
    }
    if has(
        &all,
        &[
            "deprecat",
            "sunset",
            "end of life",
            "no longer supported",
            "will be removed",
            "removal of",
        ],
    ) {
        return UpdateKind::ApiDeprecation;
    }
    if has(&t, &["api version", "release candidate", "version release"])
        || (has(&t, &["api"]) && has(&t, &["release", "released", "available"]))
    {
        return UpdateKind::ApiVersionRelease;
    }
    if has(&t, &["policy", "policies", "guideline"]) {
        return UpdateKind::PolicyChange;
    }
    if has(
        &all,
        &[
            "incident",
            "outage",
            "disruption",
            "degraded",
            "issue with",
            "issues with",
            "errors",
            "delays",
            "delayed",
            "unavailable",
            "investigating",
        ],
    ) {
        return if platform == Platform::GoogleSearch {
            UpdateKind::SearchIncident
        } else {
            UpdateKind::PlatformIncident
        };
    }
    UpdateKind::FeatureChange
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_ranking_updates() {
        let g = Platform::GoogleSearch;
        assert_eq!(
            classify(g, "March 2026 core update", "", &[]),
            UpdateKind::CoreUpdate
        );
        assert_eq!(
            classify(g, "August 2026 spam update", "", &[]),
            UpdateKind::SpamUpdate
        );
        assert_eq!(
            classify(g, "November 2026 reviews update", "", &[]),
            UpdateKind::RankingUpdateOther
        );
        assert_eq!(
            classify(g, "Issue with crawling some sites", "", &[]),
            UpdateKind::SearchIncident
        );
    }

    #[test]
    fn platform_changes() {
        assert_eq!(
            classify(
                Platform::Shopify,
                "API version 2027-01 is now available",
                "",
                &[]
            ),
            UpdateKind::ApiVersionRelease
        );
        assert_eq!(
            classify(Platform::Shopify, "Checkout.liquid sunset", "", &[]),
            UpdateKind::ApiDeprecation
        );
        assert_eq!(
            classify(Platform::Meta, "Ads delivery delayed", "", &[]),
            UpdateKind::PlatformIncident
        );
        assert_eq!(
            classify(
                Platform::GoogleAds,
                "Updates to the Shopping ads policy",
                "",
                &[]
            ),
            UpdateKind::PolicyChange
        );
        assert_eq!(
            classify(Platform::Pinterest, "New shoppable pins", "", &[]),
            UpdateKind::FeatureChange
        );
    }
}
