//! The task definition a release registers: the arena's rendered
//! `ecs-task-definition.json` (what `copilot render` shows) with the
//! release's image, environment and secret references.
//!
//! Every field of the rendered file is carried into the registration, or
//! the registration is refused naming the field: what is rendered is what
//! is registered, never a silently shortened copy.

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionFluentBuilder;
use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, CpuArchitecture, HealthCheck, KeyValuePair,
    LogConfiguration, LogDriver, NetworkMode, OsFamily, PortMapping, RuntimePlatform,
    Secret as EcsSecret, Tag, TransportProtocol,
};
use serde_json::Value;

use copilot_core::model::{Arena, SecretStore};
use copilot_core::provider::{ProviderError, ReleaseSpec, Secret};
use copilot_core::render::{ReleaseInfo, render_arena};

/// Tags copilot puts on the task definitions it registers.
pub const TAG_ARENA: &str = "copilot:arena";
pub const TAG_RELEASE: &str = "copilot:release";
pub const TAG_RELEASE_ID: &str = "copilot:release-id";
pub const TAG_LAUNCH: &str = "copilot:launch";

/// The rendered task definition of `release`, as JSON, with the release's
/// environment and secret references merged into its first container.
pub fn document(root: &Path, arena: &Arena, release: &ReleaseSpec) -> Result<Value, ProviderError> {
    let info = ReleaseInfo {
        image: release.image.clone(),
        version: release.version.clone(),
    };
    let files = render_arena(root, arena, &info).map_err(|e| {
        ProviderError::unavailable("render the ECS task definition", e.to_string())
            .with_hint("check it with `copilot render` for the arena")
    })?;
    let file = files
        .iter()
        .find(|f| f.name == "ecs-task-definition.json")
        .ok_or_else(|| {
            ProviderError::unavailable(
                "render the ECS task definition",
                "the ECS templates gave no ecs-task-definition.json",
            )
        })?;
    let mut doc: Value = serde_json::from_str(&file.content).map_err(|e| {
        ProviderError::unavailable(
            "render the ECS task definition",
            format!("{}: {e}", file.template),
        )
    })?;
    let container = doc
        .pointer_mut("/containerDefinitions/0")
        .filter(|c| c.is_object())
        .ok_or_else(|| {
            ProviderError::unavailable(
                "render the ECS task definition",
                format!("{} defines no container", file.template),
            )
        })?;
    // The template's variables, then the release's on top.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for kv in container["environment"].as_array().into_iter().flatten() {
        if let (Some(k), Some(v)) = (kv["name"].as_str(), kv["value"].as_str()) {
            env.insert(k.to_string(), v.to_string());
        }
    }
    env.extend(release.env.clone());
    container["environment"] = env
        .iter()
        .map(|(k, v)| serde_json::json!({ "name": k, "value": v }))
        .collect();
    let mut secrets = Vec::new();
    for (name, s) in &release.secrets {
        match s {
            Secret::Platform(r) => {
                secrets.push(serde_json::json!({ "name": name, "valueFrom": r.key }))
            }
            // `prepare` refuses these before anything is registered.
            Secret::Value(_) => {}
        }
    }
    container["secrets"] = Value::Array(secrets);
    Ok(doc)
}

fn field_err(path: &str, what: &str) -> ProviderError {
    ProviderError::unavailable(
        "register the ECS task definition",
        format!("`{path}` in ecs-task-definition.json: {what}"),
    )
    .with_hint("copilot registers the fields of the AWS task definition it knows; remove or correct this one")
}

fn text<'a>(v: &'a Value, path: &str) -> Result<Option<&'a str>, ProviderError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(field_err(path, "expected a string")),
    }
}

fn int(v: &Value, path: &str) -> Result<Option<i32>, ProviderError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| field_err(path, "expected a whole number")),
        _ => Err(field_err(path, "expected a number")),
    }
}

fn strings(v: &Value, path: &str) -> Result<Vec<String>, ProviderError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| field_err(path, "expected a list of strings"))
            })
            .collect(),
        _ => Err(field_err(path, "expected a list")),
    }
}

fn known(obj: &Value, path: &str, fields: &[&str]) -> Result<(), ProviderError> {
    let Some(map) = obj.as_object() else {
        return Err(field_err(path, "expected an object"));
    };
    match map.keys().find(|k| !fields.contains(&k.as_str())) {
        Some(k) => Err(field_err(
            &format!("{path}.{k}"),
            "not a field copilot registers",
        )),
        None => Ok(()),
    }
}

fn build<T, E: std::fmt::Display>(r: Result<T, E>, path: &str) -> Result<T, ProviderError> {
    r.map_err(|e| field_err(path, &e.to_string()))
}

/// The registration of `doc`, tagged for `arena`, `release` and the launch `key`.
pub fn register(
    mut call: RegisterTaskDefinitionFluentBuilder,
    doc: &Value,
    tags: &[(&str, &str)],
) -> Result<RegisterTaskDefinitionFluentBuilder, ProviderError> {
    known(
        doc,
        "",
        &[
            "family",
            "networkMode",
            "requiresCompatibilities",
            "cpu",
            "memory",
            "runtimePlatform",
            "tags",
            "containerDefinitions",
            "executionRoleArn",
            "taskRoleArn",
        ],
    )?;
    let family = text(&doc["family"], "family")?.ok_or_else(|| field_err("family", "missing"))?;
    call = call.family(family);
    if let Some(m) = text(&doc["networkMode"], "networkMode")? {
        call = call.network_mode(NetworkMode::from(m));
    }
    for c in strings(&doc["requiresCompatibilities"], "requiresCompatibilities")? {
        call = call.requires_compatibilities(Compatibility::from(c.as_str()));
    }
    if let Some(v) = text(&doc["cpu"], "cpu")? {
        call = call.cpu(v);
    }
    if let Some(v) = text(&doc["memory"], "memory")? {
        call = call.memory(v);
    }
    if let Some(v) = text(&doc["executionRoleArn"], "executionRoleArn")? {
        call = call.execution_role_arn(v);
    }
    if let Some(v) = text(&doc["taskRoleArn"], "taskRoleArn")? {
        call = call.task_role_arn(v);
    }
    let rp = &doc["runtimePlatform"];
    if !rp.is_null() {
        known(
            rp,
            "runtimePlatform",
            &["cpuArchitecture", "operatingSystemFamily"],
        )?;
        let mut b = RuntimePlatform::builder();
        if let Some(a) = text(&rp["cpuArchitecture"], "runtimePlatform.cpuArchitecture")? {
            b = b.cpu_architecture(CpuArchitecture::from(a));
        }
        if let Some(o) = text(
            &rp["operatingSystemFamily"],
            "runtimePlatform.operatingSystemFamily",
        )? {
            b = b.operating_system_family(OsFamily::from(o));
        }
        call = call.runtime_platform(b.build());
    }
    let mut all_tags: BTreeMap<String, String> = BTreeMap::new();
    for t in doc["tags"].as_array().into_iter().flatten() {
        known(t, "tags[]", &["key", "value"])?;
        let k = text(&t["key"], "tags[].key")?.ok_or_else(|| field_err("tags[].key", "missing"))?;
        let v = text(&t["value"], "tags[].value")?.unwrap_or_default();
        all_tags.insert(k.to_string(), v.to_string());
    }
    for (k, v) in tags {
        all_tags.insert(k.to_string(), v.to_string());
    }
    for (k, v) in &all_tags {
        call = call.tags(Tag::builder().key(k).value(v).build());
    }
    let containers = doc["containerDefinitions"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| field_err("containerDefinitions", "expected at least one container"))?;
    for (i, c) in containers.iter().enumerate() {
        call = call.container_definitions(container(c, &format!("containerDefinitions[{i}]"))?);
    }
    Ok(call)
}

fn container(c: &Value, path: &str) -> Result<ContainerDefinition, ProviderError> {
    known(
        c,
        path,
        &[
            "name",
            "image",
            "essential",
            "portMappings",
            "command",
            "entryPoint",
            "workingDirectory",
            "environment",
            "secrets",
            "healthCheck",
            "logConfiguration",
            "cpu",
            "memory",
            "memoryReservation",
        ],
    )?;
    let at = |f: &str| format!("{path}.{f}");
    let mut b = ContainerDefinition::builder();
    if let Some(v) = text(&c["name"], &at("name"))? {
        b = b.name(v);
    }
    if let Some(v) = text(&c["image"], &at("image"))? {
        b = b.image(v);
    }
    match &c["essential"] {
        Value::Null => {}
        Value::Bool(e) => b = b.essential(*e),
        _ => return Err(field_err(&at("essential"), "expected true or false")),
    }
    for v in strings(&c["command"], &at("command"))? {
        b = b.command(v);
    }
    for v in strings(&c["entryPoint"], &at("entryPoint"))? {
        b = b.entry_point(v);
    }
    if let Some(v) = text(&c["workingDirectory"], &at("workingDirectory"))? {
        b = b.working_directory(v);
    }
    if let Some(v) = int(&c["cpu"], &at("cpu"))? {
        b = b.cpu(v);
    }
    if let Some(v) = int(&c["memory"], &at("memory"))? {
        b = b.memory(v);
    }
    if let Some(v) = int(&c["memoryReservation"], &at("memoryReservation"))? {
        b = b.memory_reservation(v);
    }
    for pm in c["portMappings"].as_array().into_iter().flatten() {
        let p = at("portMappings[]");
        known(
            pm,
            &p,
            &[
                "containerPort",
                "hostPort",
                "protocol",
                "name",
                "appProtocol",
            ],
        )?;
        let mut m = PortMapping::builder();
        if let Some(v) = int(&pm["containerPort"], &p)? {
            m = m.container_port(v);
        }
        if let Some(v) = int(&pm["hostPort"], &p)? {
            m = m.host_port(v);
        }
        if let Some(v) = text(&pm["protocol"], &p)? {
            m = m.protocol(TransportProtocol::from(v));
        }
        if let Some(v) = text(&pm["name"], &p)? {
            m = m.name(v);
        }
        if let Some(v) = text(&pm["appProtocol"], &p)? {
            m = m.app_protocol(aws_sdk_ecs::types::ApplicationProtocol::from(v));
        }
        b = b.port_mappings(m.build());
    }
    for kv in c["environment"].as_array().into_iter().flatten() {
        let p = at("environment[]");
        known(kv, &p, &["name", "value"])?;
        b = b.environment(
            KeyValuePair::builder()
                .set_name(text(&kv["name"], &p)?.map(str::to_string))
                .set_value(text(&kv["value"], &p)?.map(str::to_string))
                .build(),
        );
    }
    for s in c["secrets"].as_array().into_iter().flatten() {
        let p = at("secrets[]");
        known(s, &p, &["name", "valueFrom"])?;
        b = b.secrets(build(
            EcsSecret::builder()
                .set_name(text(&s["name"], &p)?.map(str::to_string))
                .set_value_from(text(&s["valueFrom"], &p)?.map(str::to_string))
                .build(),
            &p,
        )?);
    }
    let hc = &c["healthCheck"];
    if !hc.is_null() {
        let p = at("healthCheck");
        known(
            hc,
            &p,
            &["command", "interval", "timeout", "retries", "startPeriod"],
        )?;
        let mut h = HealthCheck::builder().set_command(Some(strings(&hc["command"], &p)?));
        h = h
            .set_interval(int(&hc["interval"], &p)?)
            .set_timeout(int(&hc["timeout"], &p)?)
            .set_retries(int(&hc["retries"], &p)?)
            .set_start_period(int(&hc["startPeriod"], &p)?);
        b = b.health_check(build(h.build(), &p)?);
    }
    let lc = &c["logConfiguration"];
    if !lc.is_null() {
        let p = at("logConfiguration");
        known(lc, &p, &["logDriver", "options"])?;
        let mut l = LogConfiguration::builder()
            .set_log_driver(text(&lc["logDriver"], &p)?.map(LogDriver::from));
        for (k, v) in lc["options"].as_object().into_iter().flatten() {
            l = l.options(k, v.as_str().unwrap_or_default());
        }
        b = b.log_configuration(build(l.build(), &p)?);
    }
    Ok(b.build())
}

/// Secrets copilot resolved itself would land in the task definition in
/// clear; on ECS they must come from Secrets Manager or SSM.
pub fn refuse_values(release: &ReleaseSpec) -> Result<(), ProviderError> {
    let values: Vec<&str> = release
        .secrets
        .iter()
        .filter(|(_, s)| matches!(s, Secret::Value(_)))
        .map(|(n, _)| n.as_str())
        .collect();
    if values.is_empty() {
        return Ok(());
    }
    Err(ProviderError::unavailable(
        "prepare the ECS task definition",
        format!(
            "{} would be written into the task definition in clear",
            values.join(", ")
        ),
    )
    .with_hint(format!(
        "keep them in {} (`aws-sm:name`) or {} (`aws-ssm:/path`); ECS injects them when a task starts",
        SecretStore::AwsSecretsManager,
        SecretStore::AwsSsm
    )))
}
