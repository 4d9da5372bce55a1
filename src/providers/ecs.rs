//! The `ecs` provider's settings. Driving ECS and ELBv2 is not built yet; an
//! arena on ECS validates, and `deploy` says the provider is missing.

use crate::config::{Diagnostics, SettingsInput};
use crate::model::{EcsSettings, ProviderSettings};

pub fn settings(input: &SettingsInput<'_>, diags: &mut Diagnostics) -> Option<ProviderSettings> {
    let p = input.section;
    let mut ok = true;
    if let Some(tg) = &p.target_groups {
        for colour in tg.value.keys() {
            if colour != "blue" && colour != "green" {
                ok = false;
                diags.error(
                    input.file,
                    tg.loc,
                    format!("unknown colour `{colour}` in target_groups"),
                    "name the target groups `blue` and `green`",
                );
            }
        }
    }
    ok.then(|| {
        ProviderSettings::Ecs(EcsSettings {
            cluster: super::text(&p.cluster),
            service: super::text(&p.service),
            region: super::opt_text(&p.region),
            listener: super::opt_text(&p.listener),
            target_groups: p
                .target_groups
                .as_ref()
                .map(|t| t.value.clone())
                .unwrap_or_default(),
            family: super::opt_text(&p.family),
        })
    })
}
