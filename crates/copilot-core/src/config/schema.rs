//! JSON Schemas of the definition formats, derived from the types in `def`.

use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Value, json};

use super::def::{ArenaFile, GateFile};
use super::params::*;
use crate::model::GateKind;

fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12().into_generator()
}

/// The schema of `arenas/*.yaml`.
pub fn arena() -> Value {
    let schema = generator().into_root_schema_for::<ArenaFile>();
    serde_json::to_value(schema).expect("schema serializes")
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
