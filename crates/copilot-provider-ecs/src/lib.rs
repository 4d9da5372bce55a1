//! The `ecs` provider: an arena is an ECS cluster behind an Application Load
//! Balancer; a colour is an ECS service (`<service>-blue`, `<service>-green`)
//! whose tasks register in that colour's target group; traffic is the
//! weighted forward action of the listener (or of one of its rules) over the
//! two target groups.
//!
//! The settings and their rules are always built (`copilot validate` checks
//! an ECS arena on any build); the client is behind the `ecs` feature.

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod metrics;
#[cfg(feature = "client")]
mod taskdef;

#[cfg(feature = "client")]
pub use client::EcsProvider;

use std::collections::BTreeMap;

use copilot_core::config::def::At;
use copilot_core::config::{Diagnostics, SettingsInput};
use copilot_core::model::{
    Capabilities, ProviderSettings, SecretStore, StrategyKind, TrafficSplit,
};
use copilot_core::render::{Format, TemplateSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`.
fn valid_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
}

/// An ELBv2 ARN of `kind` (`listener`, `listener-rule`, `targetgroup`).
fn elb_arn(arn: &str, kind: &str) -> bool {
    arn.starts_with("arn:aws")
        && arn.contains(":elasticloadbalancing:")
        && arn.contains(&format!(":{kind}/"))
}

/// The `provider:` settings of an ECS arena, as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Section {
    /// The cluster name or ARN.
    #[serde(default)]
    pub cluster: Option<At<String>>,
    /// The ECS service; the colours are `<service>-blue` and `<service>-green`.
    #[serde(default)]
    pub service: Option<At<String>>,
    /// The AWS region.
    #[serde(default)]
    pub region: Option<At<String>>,
    /// The ELBv2 listener whose forward action is weighted.
    #[serde(default)]
    pub listener: Option<At<String>>,
    /// Target groups per colour (`blue`, `green`).
    #[serde(default)]
    pub target_groups: Option<At<BTreeMap<String, String>>>,
    /// The task definition family.
    #[serde(default)]
    pub family: Option<At<String>>,
    /// A listener rule whose forward action is weighted, instead of the listener's default action.
    #[serde(default)]
    pub rule: Option<At<String>>,
    /// Where the arena's traffic enters [default: the load balancer's DNS name].
    #[serde(default)]
    pub url: Option<At<String>>,
}

/// The settings of an arena on this provider, checked.
#[derive(Clone, Debug, Serialize)]
pub struct EcsSettings {
    pub cluster: String,
    /// The colours are the ECS services `<service>-blue` and `<service>-green`.
    pub service: String,
    pub region: Option<String>,
    /// The ELBv2 listener whose default forward action is weighted.
    pub listener: Option<String>,
    /// Or a rule of it, whose forward action is weighted.
    pub rule: Option<String>,
    /// Target group name or ARN per colour.
    pub target_groups: BTreeMap<String, String>,
    pub family: Option<String>,
    /// Where the arena's traffic enters [default: the load balancer's DNS name].
    pub url: Option<String>,
}

/// What this provider can do; `copilot validate` holds arena strategies to it.
pub static CAPABILITIES: Capabilities = Capabilities {
    strategies: &[
        StrategyKind::Rolling,
        StrategyKind::Immediate,
        StrategyKind::BlueGreen,
        StrategyKind::Canary,
    ],
    traffic_split: TrafficSplit::Exact,
    instant_rollback: true,
    live_on_ready: false,
    routes_by_header: true,
    settings: &[
        "cluster",
        "service",
        "region",
        "listener",
        "target_groups",
        "family",
        "rule",
        "url",
    ],
    required_settings: &["cluster", "service", "target_groups"],
    secret_stores: &[SecretStore::AwsSecretsManager, SecretStore::AwsSsm],
    templates: &[TemplateSpec {
        template: "templates/ecs-task-definition.json.j2",
        output: "ecs-task-definition.json",
        format: Format::Json,
    }],
};

pub fn settings(input: &SettingsInput<'_>, diags: &mut Diagnostics) -> Option<ProviderSettings> {
    let p: Section = input.section(diags)?;
    let p = &p;
    let file = input.file;
    let mut ok = true;
    if let Some(tg) = &p.target_groups {
        for colour in tg.value.keys() {
            if colour != "blue" && colour != "green" {
                ok = false;
                diags.error(
                    file,
                    tg.loc,
                    format!("unknown colour `{colour}` in target_groups"),
                    "name the target groups `blue` and `green`",
                );
            }
        }
        for colour in ["blue", "green"] {
            if !tg.value.contains_key(colour) {
                ok = false;
                diags.error(
                    file,
                    tg.loc,
                    format!("target_groups has no `{colour}`"),
                    "each colour needs its own target group: `{ blue: <name or ARN>, green: <name or ARN> }`",
                );
            }
        }
        for (colour, tg_ref) in &tg.value {
            if tg_ref.starts_with("arn:") && !elb_arn(tg_ref, "targetgroup") {
                ok = false;
                diags.error(
                    file,
                    tg.loc,
                    format!("the {colour} target group `{tg_ref}` is not a target group ARN"),
                    "write its name, or an ARN like arn:aws:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>",
                );
            }
        }
        if tg.value.contains_key("blue") && tg.value.get("blue") == tg.value.get("green") {
            ok = false;
            diags.error(
                file,
                tg.loc,
                "blue and green share one target group",
                "give each colour its own target group",
            );
        }
    }
    match (&p.listener, &p.rule) {
        (None, None) => {
            ok = false;
            diags.error(
                file,
                input.at,
                "an ECS arena needs `listener` (or `rule`)",
                "name the ALB listener whose forward action copilot weights over the two target groups",
            );
        }
        (Some(l), _) if !elb_arn(&l.value, "listener") => {
            ok = false;
            diags.error(
                file,
                l.loc,
                format!("`{}` is not a listener ARN", l.value),
                "write arn:aws:elasticloadbalancing:<region>:<account>:listener/app/<lb>/<id>/<id>",
            );
        }
        (_, Some(r)) if !elb_arn(&r.value, "listener-rule") => {
            ok = false;
            diags.error(
                file,
                r.loc,
                format!("`{}` is not a listener rule ARN", r.value),
                "write arn:aws:elasticloadbalancing:<region>:<account>:listener-rule/app/<lb>/<id>/<id>/<id>",
            );
        }
        _ => {}
    }
    if let Some(r) = &p.region
        && !valid_region(&r.value)
    {
        ok = false;
        diags.error(
            file,
            r.loc,
            format!("`{}` is not an AWS region", r.value),
            "write a region code such as us-east-1 or eu-west-2",
        );
    }
    let url =
        copilot_core::provider::url_setting(input, &p.url, diags).unwrap_or_else(|_refused| {
            ok = false;
            None
        });
    ok.then(|| {
        ProviderSettings::new(EcsSettings {
            cluster: copilot_core::provider::text(&p.cluster),
            service: copilot_core::provider::text(&p.service),
            region: copilot_core::provider::opt_text(&p.region),
            listener: copilot_core::provider::opt_text(&p.listener),
            rule: copilot_core::provider::opt_text(&p.rule),
            target_groups: p
                .target_groups
                .as_ref()
                .map(|t| t.value.clone())
                .unwrap_or_default(),
            family: copilot_core::provider::opt_text(&p.family),
            url,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_and_arns_are_recognised() {
        assert!(valid_region("us-east-1"));
        assert!(valid_region("us-gov-west-1"));
        assert!(!valid_region("useast1"));
        assert!(!valid_region("dfw"));
        assert!(elb_arn(
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/lb/50dc6c495c0c9188/f2f7dc8efc522ab2",
            "listener"
        ));
        assert!(!elb_arn(
            "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/blue/50dc6c495c0c9188",
            "listener"
        ));
    }
}
