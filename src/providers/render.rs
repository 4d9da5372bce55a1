//! The `render` provider's settings. Driving Render's API is not built yet;
//! an arena on Render validates, and `deploy` says the provider is missing.

use crate::config::{Diagnostics, SettingsInput};
use crate::model::{ProviderSettings, RenderSettings};

pub fn settings(input: &SettingsInput<'_>, _diags: &mut Diagnostics) -> Option<ProviderSettings> {
    let p = input.section;
    Some(ProviderSettings::Render(RenderSettings {
        service: super::text(&p.service),
        region: super::opt_text(&p.region),
        plan: super::opt_text(&p.plan),
    }))
}
