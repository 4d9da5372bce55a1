//! The `kubernetes` provider's settings. Driving the Kubernetes API is not
//! built yet; an arena on Kubernetes validates, and `deploy` says the
//! provider is missing.

use crate::config::{Diagnostics, SettingsInput};
use crate::model::{KubernetesSettings, ProviderSettings};

pub fn settings(input: &SettingsInput<'_>, _diags: &mut Diagnostics) -> Option<ProviderSettings> {
    let p = input.section;
    Some(ProviderSettings::Kubernetes(KubernetesSettings {
        namespace: super::text(&p.namespace),
        deployment: super::text(&p.deployment),
        context: super::opt_text(&p.context),
        service: super::opt_text(&p.service),
    }))
}
