//! JSON Schemas of the definition formats, derived from the types in `def`.

use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Value, json};

use super::ProviderRules;
use super::def::{ArenaFile, GateFile};
use super::params::*;
use crate::model::GateKind;

fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12().into_generator()
}

/// The schema of `arenas/*.yaml`. Its `provider:` section has one branch
/// per provider `kind`: the settings every provider shares, and that
/// provider's own (from its crate, through `rules`).
pub fn arena(rules: &ProviderRules) -> Value {
    let schema = generator().into_root_schema_for::<ArenaFile>();
    let mut root = serde_json::to_value(schema).expect("schema serializes");
    let common = root["$defs"]["ProviderSection"].clone();
    let mut branches = Vec::new();
    for (kind, own) in (rules.schemas)() {
        let mut own = serde_json::to_value(own).expect("schema serializes");
        if let Some(Value::Object(defs)) = own.as_object_mut().and_then(|o| o.remove("$defs"))
            && let Some(root_defs) = root["$defs"].as_object_mut()
        {
            root_defs.extend(defs);
        }
        let mut properties = common["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        properties.insert("kind".into(), json!({ "const": kind.as_str() }));
        if let Some(p) = own["properties"].as_object() {
            properties.extend(p.clone());
        }
        let mut required = vec![json!("kind")];
        required.extend(
            rules
                .capabilities(kind)
                .required_settings
                .iter()
                .map(|r| json!(r)),
        );
        branches.push(json!({
            "title": format!("{kind} provider"),
            "type": "object",
            "required": required,
            "properties": properties,
            "additionalProperties": false,
        }));
    }
    root["$defs"]["ProviderSection"] = json!({
        "description": common["description"],
        "type": "object",
        "oneOf": branches,
    });
    root
}

/// One kind's variant; its definitions move to `defs` so `#/$defs/...` resolves at the root.
fn gate_variant<P: JsonSchema + Default + serde::Serialize>(
    kind: GateKind,
    defs: &mut serde_json::Map<String, Value>,
) -> Value {
    let mut v = serde_json::to_value(generator().into_root_schema_for::<GateFile<P>>())
        .expect("schema serializes");
    if let Some(obj) = v.as_object_mut() {
        obj.remove("$schema");
        if let Some(Value::Object(d)) = obj.remove("$defs") {
            defs.extend(d);
        }
        obj.insert("title".into(), json!(format!("{kind} gate")));
        if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert("kind".into(), json!({ "const": kind.as_str() }));
        }
    }
    v
}

/// The schema of `gates/*.yaml`: one variant per gate kind, chosen by `kind`.
pub fn gate() -> Value {
    let mut defs = serde_json::Map::new();
    let d = &mut defs;
    let variants = vec![
        gate_variant::<MigrationsParams>(GateKind::Migrations, d),
        gate_variant::<QueueHealthParams>(GateKind::QueueHealth, d),
        gate_variant::<IngestionParams>(GateKind::Ingestion, d),
        gate_variant::<LatencyParams>(GateKind::Latency, d),
        gate_variant::<HealthParams>(GateKind::Health, d),
        gate_variant::<AlertsParams>(GateKind::Alerts, d),
        gate_variant::<WindowParams>(GateKind::Window, d),
        gate_variant::<EnvParams>(GateKind::Env, d),
        gate_variant::<SmokeParams>(GateKind::Smoke, d),
        gate_variant::<BackupParams>(GateKind::Backup, d),
        gate_variant::<BakeParams>(GateKind::Bake, d),
        gate_variant::<ApprovalParams>(GateKind::Approval, d),
        gate_variant::<CommandParams>(GateKind::Command, d),
    ];
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "copilot gate definition",
        "type": "object",
        "required": ["name", "kind"],
        "oneOf": variants,
        "$defs": defs,
    })
}
