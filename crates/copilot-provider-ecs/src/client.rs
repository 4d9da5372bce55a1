//! The ECS provider's client: ECS for the colours' services and task
//! definitions, ELBv2 for the listener's weights and the target groups'
//! health, CloudWatch for analysis.
//!
//! A deploy registers a task definition revision from the rendered template
//! (the ledger records its ARN before copilot waits), updates the idle
//! colour's service to it with `desiredCount = instances`, and waits until
//! the service is stable (one deployment, running = desired, rollout
//! completed) and the colour's target group has that many healthy targets.
//! A service that ECS itself moved off the new revision (the deployment
//! circuit breaker) is reported as rolled back by the platform, never as
//! success.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{Service, TaskDefinitionField};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, HttpHeaderConditionConfig,
    QueryStringConditionConfig, QueryStringKeyValuePair, RuleCondition, TargetGroupTuple,
    TargetHealthStateEnum,
};
use serde_json::json;
use tokio::sync::OnceCell;

use super::taskdef::{self, TAG_ARENA, TAG_LAUNCH, TAG_RELEASE, TAG_RELEASE_ID};
use crate::EcsSettings;
use copilot_aws::error;
use copilot_core::model::{Arena, ProviderKind, SecretStore};
use copilot_core::provider::{
    ArenaStatus, CohortRoute, Counts, Drift, ErrorKind, Handle, Op, Provider, ProviderError,
    ReleaseSpec, Secret, Slot, SlotStatus,
};

/// How Shopify names a shop to an app: a header, or a query parameter.
const SHOP_HEADER: &str = "X-Shopify-Shop-Domain";
const SHOP_PARAMETER: &str = "shop";
/// Condition values an ALB rule may hold.
const MAX_CONDITION_VALUES: usize = 5;

struct Clients {
    ecs: aws_sdk_ecs::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    secrets: aws_sdk_secretsmanager::Client,
    /// Target group ARN per colour.
    target_groups: BTreeMap<Slot, String>,
    /// Where the arena's traffic enters: the `url` setting, else the load
    /// balancer's address with the listener's protocol and port.
    url: String,
}

/// What a registered task definition says of itself (they never change).
#[derive(Clone, Debug, Default)]
struct Revision {
    release_id: String,
    version: String,
    image: String,
    /// Registered by copilot for this arena.
    ours: bool,
    launch: String,
    status: String,
}

/// How long a failed deployment is watched for ECS's own rollback before it
/// is reported as a failed release.
const ROLLBACK_GRACE: Duration = Duration::from_secs(10);

pub struct EcsProvider {
    root: PathBuf,
    arena: Arena,
    s: EcsSettings,
    instances: u32,
    clients: OnceCell<Clients>,
    revisions: std::sync::Mutex<BTreeMap<String, Revision>>,
}

/// One colour as ECS and the load balancer see it.
struct Colour {
    service: Service,
    revision: Revision,
    healthy_targets: u32,
    /// Where a healthy task answers directly (`http://ip:port`).
    target_url: Option<String>,
}

fn handle_td(h: &Handle) -> Option<&str> {
    h.get("task_definition").and_then(|v| v.as_str())
}

impl EcsProvider {
    pub fn new(root: &std::path::Path, arena: &Arena, s: &EcsSettings) -> Self {
        EcsProvider {
            root: root.to_path_buf(),
            arena: arena.clone(),
            s: s.clone(),
            instances: arena.provider.instances,
            clients: OnceCell::new(),
            revisions: Default::default(),
        }
    }

    fn service_name(&self, slot: Slot) -> String {
        format!("{}-{slot}", self.s.service)
    }

    async fn clients(&self) -> Result<&Clients, ProviderError> {
        self.clients
            .get_or_try_init(|| async {
                let conf = copilot_aws::config(self.s.region.as_deref()).await?;
                let elb = aws_sdk_elasticloadbalancingv2::Client::new(&conf);
                let mut target_groups = BTreeMap::new();
                for slot in [Slot::Blue, Slot::Green] {
                    let name = self
                        .s
                        .target_groups
                        .get(slot.as_str())
                        .cloned()
                        .unwrap_or_default();
                    let arn = if name.starts_with("arn:") {
                        name
                    } else {
                        let out = elb
                            .describe_target_groups()
                            .names(&name)
                            .send()
                            .await
                            .map_err(|e| {
                                error(format!("find the {slot} target group `{name}`"), e)
                            })?;
                        out.target_groups()
                            .first()
                            .and_then(|t| t.target_group_arn())
                            .map(str::to_string)
                            .ok_or_else(|| {
                                ProviderError::new(
                                    ErrorKind::NotFound,
                                    format!("find the {slot} target group"),
                                    format!("there is no target group `{name}`"),
                                )
                            })?
                    };
                    target_groups.insert(slot, arn);
                }
                let url = match &self.s.url {
                    Some(u) => u.clone(),
                    None => self.load_balancer_url(&elb).await?,
                };
                Ok(Clients {
                    url,
                    ecs: aws_sdk_ecs::Client::new(&conf),
                    cloudwatch: aws_sdk_cloudwatch::Client::new(&conf),
                    secrets: aws_sdk_secretsmanager::Client::new(&conf),
                    elb,
                    target_groups,
                })
            })
            .await
    }

    /// `release` with its Secrets Manager references as ECS takes them: a
    /// task definition's `valueFrom` must be the secret's full ARN (only SSM
    /// parameters may be named), so a name is looked up (`DescribeSecret`);
    /// a JSON key, stage or version after the name (`name:key::`) is kept.
    async fn with_secret_arns(
        &self,
        c: &Clients,
        release: &ReleaseSpec,
    ) -> Result<ReleaseSpec, ProviderError> {
        let mut release = release.clone();
        for (var, secret) in &mut release.secrets {
            let Secret::Platform(r) = secret else {
                continue;
            };
            if r.store != SecretStore::AwsSecretsManager || r.key.starts_with("arn:") {
                continue;
            }
            let (name, rest) = match r.key.split_once(':') {
                Some((name, rest)) => (name.to_string(), Some(rest.to_string())),
                None => (r.key.clone(), None),
            };
            let out = c
                .secrets
                .describe_secret()
                .secret_id(&name)
                .send()
                .await
                .map_err(|e| {
                    let e = error(format!("look up secret `{name}` ({var})"), e);
                    if e.kind == ErrorKind::NotFound || e.message.contains("ResourceNotFound") {
                        ProviderError::new(
                            ErrorKind::NotFound,
                            format!("look up secret `{name}`"),
                            format!(
                                "{var} refers to Secrets Manager secret `{name}`, which does not exist in {}",
                                self.s.region.as_deref().unwrap_or("this region")
                            ),
                        )
                        .with_hint("create it, or correct the reference under `env.secrets`")
                    } else {
                        e
                    }
                })?;
            let arn = out.arn().unwrap_or_default().to_string();
            r.key = match rest {
                Some(rest) => format!("{arn}:{rest}"),
                None => arn,
            };
        }
        Ok(release)
    }

    /// `http(s)://<load balancer DNS name>[:port]` of the listener.
    async fn load_balancer_url(
        &self,
        elb: &aws_sdk_elasticloadbalancingv2::Client,
    ) -> Result<String, ProviderError> {
        // A rule's listener: listener-rule/app/<lb>/<id>/<listener>/<rule>.
        let listener = match (&self.s.listener, &self.s.rule) {
            (Some(l), _) => l.clone(),
            (None, Some(r)) => {
                let l = r.replacen(":listener-rule/", ":listener/", 1);
                l.rsplit_once('/')
                    .map_or(l.clone(), |(head, _)| head.to_string())
            }
            (None, None) => return Ok(String::new()),
        };
        let out = elb
            .describe_listeners()
            .listener_arns(&listener)
            .send()
            .await
            .map_err(|e| error(format!("describe listener {listener}"), e))?;
        let Some(l) = out.listeners().first() else {
            return Ok(String::new());
        };
        let https = l.protocol().map(|p| p.as_str()) == Some("HTTPS");
        let port = l.port().unwrap_or(if https { 443 } else { 80 });
        let Some(lb) = l.load_balancer_arn() else {
            return Ok(String::new());
        };
        let out = elb
            .describe_load_balancers()
            .load_balancer_arns(lb)
            .send()
            .await
            .map_err(|e| error(format!("describe load balancer {lb}"), e))?;
        let dns = out
            .load_balancers()
            .first()
            .and_then(|b| b.dns_name())
            .unwrap_or_default();
        let scheme = if https { "https" } else { "http" };
        Ok(match (https, port) {
            (true, 443) | (false, 80) => format!("{scheme}://{dns}"),
            _ => format!("{scheme}://{dns}:{port}"),
        })
    }

    async fn revision(&self, c: &Clients, arn: &str) -> Result<Revision, ProviderError> {
        if let Some(r) = self.revisions.lock().unwrap().get(arn) {
            return Ok(r.clone());
        }
        let out = c
            .ecs
            .describe_task_definition()
            .task_definition(arn)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .map_err(|e| error(format!("describe task definition {arn}"), e))?;
        let tags: BTreeMap<&str, &str> = out
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?, t.value()?)))
            .collect();
        let td = out.task_definition();
        // copilot's own revisions carry the arena, the release and the launch
        // that registered them; one tag alone is not taken as ownership.
        let r = Revision {
            ours: tags.get(TAG_ARENA) == Some(&self.arena.name.as_str())
                && tags
                    .get(TAG_RELEASE_ID)
                    .is_some_and(|t| t.starts_with("rel_"))
                && tags.get(TAG_LAUNCH).is_some_and(|t| !t.is_empty()),
            release_id: tags.get(TAG_RELEASE_ID).unwrap_or(&"").to_string(),
            version: tags.get(TAG_RELEASE).unwrap_or(&"").to_string(),
            launch: tags.get(TAG_LAUNCH).unwrap_or(&"").to_string(),
            image: td
                .and_then(|t| t.container_definitions().first())
                .and_then(|c| c.image())
                .unwrap_or_default()
                .to_string(),
            status: td
                .and_then(|t| t.status())
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
        };
        self.revisions
            .lock()
            .unwrap()
            .insert(arn.to_string(), r.clone());
        Ok(r)
    }

    async fn services(&self, c: &Clients) -> Result<BTreeMap<Slot, Service>, ProviderError> {
        let names = [
            self.service_name(Slot::Blue),
            self.service_name(Slot::Green),
        ];
        let out = c
            .ecs
            .describe_services()
            .cluster(&self.s.cluster)
            .services(&names[0])
            .services(&names[1])
            .send()
            .await
            .map_err(|e| {
                error(
                    format!("describe services in cluster {}", self.s.cluster),
                    e,
                )
            })?;
        let mut found = BTreeMap::new();
        for svc in out.services() {
            let slot = match svc.service_name() {
                Some(n) if n == names[0] => Slot::Blue,
                Some(n) if n == names[1] => Slot::Green,
                _ => continue,
            };
            if svc.status() == Some("ACTIVE") {
                found.insert(slot, svc.clone());
            }
        }
        if found.len() < 2 {
            let missing: Vec<&str> = [Slot::Blue, Slot::Green]
                .iter()
                .filter(|s| !found.contains_key(s))
                .map(|s| names[if *s == Slot::Blue { 0 } else { 1 }].as_str())
                .collect();
            return Err(ProviderError::new(
                ErrorKind::NotFound,
                format!("find the services of {}", self.arena.name),
                format!(
                    "cluster {} has no active service {}",
                    self.s.cluster,
                    missing.join(" or ")
                ),
            )
            .with_hint(format!(
                "create `{}` and `{}` (each registering in its target group) with your infrastructure code; copilot deploys into them",
                names[0], names[1]
            )));
        }
        Ok(found)
    }

    /// Healthy targets of a colour's group, and the address of one.
    async fn targets(
        &self,
        c: &Clients,
        slot: Slot,
    ) -> Result<(u32, Option<String>), ProviderError> {
        let tg = &c.target_groups[&slot];
        let out = c
            .elb
            .describe_target_health()
            .target_group_arn(tg)
            .send()
            .await
            .map_err(|e| error(format!("read the health of the {slot} target group"), e))?;
        let healthy: Vec<String> = out
            .target_health_descriptions()
            .iter()
            .filter(|d| {
                d.target_health().and_then(|h| h.state()) == Some(&TargetHealthStateEnum::Healthy)
            })
            .filter_map(|d| {
                let t = d.target()?;
                Some(format!("http://{}:{}", t.id()?, t.port().unwrap_or(80)))
            })
            .collect();
        Ok((healthy.len() as u32, healthy.into_iter().min()))
    }

    async fn colour(&self, c: &Clients, slot: Slot, svc: Service) -> Result<Colour, ProviderError> {
        let revision = match svc.task_definition() {
            Some(arn) => self.revision(c, arn).await?,
            None => Revision::default(),
        };
        let (healthy_targets, target_url) = self.targets(c, slot).await?;
        Ok(Colour {
            service: svc,
            revision,
            healthy_targets,
            target_url,
        })
    }

    /// The forward action copilot weights: the listener's default, or the rule's.
    async fn forward(&self, c: &Clients) -> Result<Vec<Action>, ProviderError> {
        if let Some(rule) = &self.s.rule {
            let out = c
                .elb
                .describe_rules()
                .rule_arns(rule)
                .send()
                .await
                .map_err(|e| error(format!("describe listener rule {rule}"), e))?;
            return Ok(out
                .rules()
                .first()
                .map(|r| r.actions().to_vec())
                .unwrap_or_default());
        }
        let listener = self.s.listener.clone().unwrap_or_default();
        let out = c
            .elb
            .describe_listeners()
            .listener_arns(&listener)
            .send()
            .await
            .map_err(|e| error(format!("describe listener {listener}"), e))?;
        Ok(out
            .listeners()
            .first()
            .map(|l| l.default_actions().to_vec())
            .unwrap_or_default())
    }

    /// The listener's rules that route a cohort to a colour of this arena:
    /// a condition on the shop (the header or the query parameter) and a
    /// forward to one of its target groups. (ARN, priority.)
    async fn cohort_rules(
        &self,
        c: &Clients,
        listener: &str,
    ) -> Result<(Vec<String>, Vec<i32>), ProviderError> {
        let (mut ours, mut taken) = (Vec::new(), Vec::new());
        let mut marker: Option<String> = None;
        loop {
            let out = c
                .elb
                .describe_rules()
                .listener_arn(listener)
                .set_marker(marker.clone())
                .send()
                .await
                .map_err(|e| error(format!("describe the rules of {listener}"), e))?;
            for r in out.rules() {
                if r.is_default() == Some(true) {
                    continue;
                }
                let on_shop = r.conditions().iter().any(|cond| {
                    cond.http_header_config().is_some_and(|h| {
                        h.http_header_name()
                            .is_some_and(|n| n.eq_ignore_ascii_case(SHOP_HEADER))
                    }) || cond.query_string_config().is_some_and(|q| {
                        q.values().iter().all(|kv| kv.key() == Some(SHOP_PARAMETER))
                    })
                });
                let to_colour = Self::weights(r.actions())
                    .keys()
                    .any(|tg| c.target_groups.values().any(|ours| ours == tg));
                match (on_shop && to_colour, r.rule_arn()) {
                    (true, Some(arn)) => ours.push(arn.to_string()),
                    _ => taken.extend(r.priority().and_then(|p| p.parse::<i32>().ok())),
                }
            }
            marker = out.next_marker().map(str::to_string);
            if marker.is_none() {
                break;
            }
        }
        Ok((ours, taken))
    }

    /// Weight per target group ARN of the forward action, as percentages.
    fn weights(actions: &[Action]) -> BTreeMap<String, u8> {
        let mut raw: BTreeMap<String, i64> = BTreeMap::new();
        for a in actions
            .iter()
            .filter(|a| a.r#type() == Some(&ActionTypeEnum::Forward))
        {
            match a.forward_config().map(|f| f.target_groups()) {
                Some(groups) if !groups.is_empty() => {
                    for g in groups {
                        if let Some(arn) = g.target_group_arn() {
                            *raw.entry(arn.to_string()).or_default() +=
                                i64::from(g.weight().unwrap_or(1));
                        }
                    }
                }
                // A forward to one group carries all of it.
                _ => {
                    if let Some(arn) = a.target_group_arn() {
                        raw.insert(arn.to_string(), 1);
                    }
                }
            }
        }
        let total: i64 = raw.values().sum();
        raw.into_iter()
            .map(|(arn, w)| {
                let pct = if total > 0 {
                    ((w * 100 + total / 2) / total) as u8
                } else {
                    0
                };
                (arn, pct)
            })
            .collect()
    }

    async fn scale(
        &self,
        c: &Clients,
        slot: Slot,
        count: i32,
        action: &str,
    ) -> Result<(), ProviderError> {
        c.ecs
            .update_service()
            .cluster(&self.s.cluster)
            .service(self.service_name(slot))
            .desired_count(count)
            .send()
            .await
            .map_err(|e| error(action.to_string(), e))?;
        Ok(())
    }

    async fn update_to(
        &self,
        c: &Clients,
        slot: Slot,
        td: &str,
        action: &str,
    ) -> Result<(), ProviderError> {
        c.ecs
            .update_service()
            .cluster(&self.s.cluster)
            .service(self.service_name(slot))
            .task_definition(td)
            .desired_count(self.instances as i32)
            .send()
            .await
            .map_err(|e| error(action.to_string(), e))?;
        Ok(())
    }

    /// The CloudWatch client and the dimensions of `slot`'s target group
    /// (`TargetGroup`, `LoadBalancer`), for analysis.
    pub(crate) async fn metric_scope(
        &self,
        slot: Slot,
    ) -> Result<(aws_sdk_cloudwatch::Client, String, String), ProviderError> {
        let c = self.clients().await?;
        let tg = &c.target_groups[&slot];
        let tg_dim = tg
            .split_once(":targetgroup/")
            .map(|(_, rest)| format!("targetgroup/{rest}"))
            .unwrap_or_default();
        let arn = self
            .s
            .listener
            .clone()
            .or_else(|| self.s.rule.clone())
            .unwrap_or_default();
        // listener/app/<lb>/<id>/<listener id> -> app/<lb>/<id>
        let lb_dim = arn
            .split_once(":listener/")
            .or_else(|| arn.split_once(":listener-rule/"))
            .map(|(_, rest)| rest.split('/').take(3).collect::<Vec<_>>().join("/"))
            .unwrap_or_default();
        Ok((c.cloudwatch.clone(), tg_dim, lb_dim))
    }
}

impl Provider for EcsProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ecs
    }

    fn url(&self) -> String {
        match (&self.s.url, self.clients.get()) {
            (Some(u), _) => u.clone(),
            (None, Some(c)) => c.url.clone(),
            (None, None) => String::new(),
        }
    }

    fn prepare(&self, release: &mut ReleaseSpec) -> Result<(), ProviderError> {
        taskdef::refuse_values(release)
    }

    async fn status(&self) -> Result<ArenaStatus, ProviderError> {
        let c = self.clients().await?;
        let services = self.services(c).await?;
        let weights = Self::weights(&self.forward(c).await?);
        let mut slots = Vec::new();
        let mut drift = Vec::new();
        for (slot, svc) in services {
            let name = self.service_name(slot);
            let col = self.colour(c, slot, svc).await?;
            let desired = col.service.desired_count().max(0) as u32;
            let running = col.service.running_count().max(0) as u32;
            let weight = weights.get(&c.target_groups[&slot]).copied().unwrap_or(0);
            if !col.revision.ours && desired > 0 {
                drift.push(Drift {
                    instance: name.clone(),
                    what: format!(
                        "runs task definition {} that copilot did not register",
                        col.service.task_definition().unwrap_or_default()
                    ),
                });
            }
            // A colour scaled to zero runs nothing, whatever the listener
            // sends it; weight sent there is drift (those requests fail).
            if desired == 0 && running == 0 {
                if weight > 0 {
                    drift.push(Drift {
                        instance: name.clone(),
                        what: format!(
                            "the listener sends {weight}% to {slot}, which runs no tasks"
                        ),
                    });
                }
                continue;
            }
            let healthy = desired > 0 && running >= desired && col.healthy_targets >= desired;
            // What copilot did not register is named by its image alone.
            let (release_id, version) = if col.revision.ours {
                (
                    col.revision.release_id.clone(),
                    col.revision.version.clone(),
                )
            } else {
                Default::default()
            };
            slots.push(SlotStatus {
                slot,
                release_id,
                version,
                image: col.revision.image.clone(),
                url: col.target_url.clone().unwrap_or_default(),
                headers: BTreeMap::new(),
                healthy,
                instances: Counts {
                    desired,
                    started: running,
                    healthy: col.healthy_targets,
                },
                regions: Vec::new(),
                weight,
            });
        }
        for (arn, w) in &weights {
            if *w > 0 && !c.target_groups.values().any(|t| t == arn) {
                drift.push(Drift {
                    instance: arn.clone(),
                    what: format!(
                        "the listener sends {w}% to a target group that is no colour of this arena"
                    ),
                });
            }
        }
        Ok(ArenaStatus {
            slots,
            url: Some(c.url.clone()).filter(|u| !u.is_empty()),
            drift,
            autodeploy: None,
        })
    }

    async fn launch(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
    ) -> Result<Handle, ProviderError> {
        let c = self.clients().await?;
        let service = self.service_name(slot);
        let release = &self.with_secret_arns(c, release).await?;
        let doc = taskdef::document(&self.root, &self.arena, release)?;
        let family = doc["family"].as_str().unwrap_or_default().to_string();
        let launch = op.key.clone();
        // Asked again with the same key (a resume), the revision registered
        // before is reused rather than registered twice.
        let newest = c
            .ecs
            .describe_task_definition()
            .task_definition(&family)
            .send()
            .await
            .ok()
            .and_then(|o| {
                o.task_definition()
                    .and_then(|t| t.task_definition_arn())
                    .map(str::to_string)
            });
        let mut arn = None;
        if let Some(n) = newest
            && self.revision(c, &n).await?.launch == launch
        {
            arn = Some(n);
        }
        let arn = match arn {
            Some(a) => a,
            None => {
                op.progress.line(&format!(
                    "registering a revision of task definition {family} with {}",
                    release.image
                ));
                let call = taskdef::register(
                    c.ecs.register_task_definition(),
                    &doc,
                    &[
                        (TAG_ARENA, self.arena.name.as_str()),
                        (TAG_RELEASE, release.version.as_str()),
                        (TAG_RELEASE_ID, release.release_id.as_str()),
                        (TAG_LAUNCH, launch.as_str()),
                    ],
                )?;
                let out = call
                    .send()
                    .await
                    .map_err(|e| error(format!("register task definition {family}"), e))?;
                out.task_definition()
                    .and_then(|t| t.task_definition_arn())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ProviderError::failed("register the task definition", "ECS gave no ARN")
                    })?
            }
        };
        op.progress.line(&format!(
            "updating service {service} to {} with {} tasks",
            arn.rsplit('/').next().unwrap_or(&arn),
            self.instances
        ));
        self.update_to(c, slot, &arn, &format!("update service {service}"))
            .await?;
        Ok(json!({ "service": service, "task_definition": arn, "launch": launch }))
    }

    async fn wait_ready(
        &self,
        op: &Op<'_>,
        slot: Slot,
        _release: &ReleaseSpec,
        handle: &Handle,
    ) -> Result<SlotStatus, ProviderError> {
        let c = self.clients().await?;
        let service = self.service_name(slot);
        let td = handle_td(handle)
            .ok_or_else(|| {
                ProviderError::failed(
                    "wait for the service",
                    "the handle names no task definition",
                )
            })?
            .to_string();
        let want = self.instances;
        let deadline = Instant::now() + op.timeout;
        op.progress.begin(
            &format!("waiting for {want} tasks of {service}"),
            Some(op.timeout),
        );
        let started = Instant::now();
        let mut failed_at = None;
        let result = loop {
            let services = self.services(c).await?;
            let svc = services[&slot].clone();
            let deployments = svc.deployments();
            let ours = deployments
                .iter()
                .find(|d| d.task_definition() == Some(td.as_str()));
            let failed = |d: &aws_sdk_ecs::types::Deployment| {
                d.rollout_state().map(|s| s.as_str()) == Some("FAILED")
            };
            let last_event = svc
                .events()
                .first()
                .and_then(|e| e.message())
                .unwrap_or_default()
                .to_string();
            if svc.task_definition() != Some(td.as_str()) {
                let reason = ours
                    .filter(|d| failed(d))
                    .and_then(|d| d.rollout_state_reason())
                    .map(str::to_string)
                    .or_else(|| {
                        last_event
                            .contains("circuit breaker")
                            .then(|| last_event.clone())
                    });
                break Err(match reason {
                    Some(why) => ProviderError::new(
                        ErrorKind::RolledBack,
                        format!("deploy into {service}"),
                        format!(
                            "ECS rolled the deployment back to {}: {why}",
                            svc.task_definition().unwrap_or("the previous revision")
                        ),
                    )
                    .with_hint(format!(
                        "read why its tasks failed: `aws ecs describe-services --cluster {} --services {service}`",
                        self.s.cluster
                    )),
                    None => ProviderError::new(
                        ErrorKind::Conflict,
                        format!("deploy into {service}"),
                        format!(
                            "the service was moved to {} meanwhile, by someone else",
                            svc.task_definition().unwrap_or("another revision")
                        ),
                    ),
                });
            }
            if let Some(d) = ours.filter(|d| failed(d)) {
                // ECS's circuit breaker marks the deployment failed a moment
                // before it moves the service back: watch for that rollback
                // a while before calling it a failure of ours.
                let since = *failed_at.get_or_insert_with(Instant::now);
                if since.elapsed() < ROLLBACK_GRACE && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                break Err(ProviderError::new(
                    ErrorKind::ReleaseFailed,
                    format!("deploy into {service}"),
                    format!(
                        "the ECS deployment failed: {}",
                        d.rollout_state_reason().unwrap_or(&last_event)
                    ),
                ));
            }
            let running = svc.running_count().max(0) as u32;
            let (healthy, url) = self.targets(c, slot).await?;
            let settled = deployments.len() == 1
                && ours.is_some_and(|d| {
                    d.running_count() >= want as i32
                        && d.rollout_state().is_none_or(|s| s.as_str() == "COMPLETED")
                });
            op.progress.update(
                started.elapsed(),
                &format!(
                    "{running}/{want} running, {healthy}/{want} healthy targets, {} deployment(s)",
                    deployments.len()
                ),
            );
            if settled && running >= want && healthy >= want {
                let rev = self.revision(c, &td).await?;
                break Ok(SlotStatus {
                    slot,
                    release_id: rev.release_id,
                    version: rev.version,
                    image: rev.image,
                    url: url.unwrap_or_default(),
                    headers: BTreeMap::new(),
                    healthy: true,
                    instances: Counts {
                        desired: want,
                        started: running,
                        healthy,
                    },
                    regions: Vec::new(),
                    weight: 0,
                });
            }
            if Instant::now() >= deadline {
                let failed_tasks = ours.map_or(0, |d| d.failed_tasks());
                break Err(ProviderError::new(
                    ErrorKind::TimedOut,
                    format!("wait for {service}"),
                    format!(
                        "after {}s: {running}/{want} tasks running, {healthy}/{want} healthy targets, {failed_tasks} failed tasks{}",
                        op.timeout.as_secs(),
                        if last_event.is_empty() {
                            String::new()
                        } else {
                            format!("; ECS says: {last_event}")
                        }
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        op.progress.finish();
        if result.is_err() {
            // Nothing of a failed start keeps running.
            let _ = self
                .scale(c, slot, 0, &format!("scale {service} to 0"))
                .await;
        }
        result
    }

    async fn set_traffic(
        &self,
        _op: &Op<'_>,
        weights: &[(Slot, u8)],
    ) -> Result<Vec<(Slot, u8)>, ProviderError> {
        let c = self.clients().await?;
        let mut forward = ForwardActionConfig::builder();
        for slot in [Slot::Blue, Slot::Green] {
            let w = weights
                .iter()
                .find(|(s, _)| *s == slot)
                .map_or(0, |(_, w)| *w);
            forward = forward.target_groups(
                TargetGroupTuple::builder()
                    .target_group_arn(&c.target_groups[&slot])
                    .weight(i32::from(w))
                    .build(),
            );
        }
        let action = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(forward.build())
            .build();
        let what = weights
            .iter()
            .map(|(s, w)| format!("{s} {w}%"))
            .collect::<Vec<_>>()
            .join(", ");
        match &self.s.rule {
            Some(rule) => {
                c.elb
                    .modify_rule()
                    .rule_arn(rule)
                    .actions(action)
                    .send()
                    .await
                    .map_err(|e| error(format!("weight listener rule to {what}"), e))?;
            }
            None => {
                c.elb
                    .modify_listener()
                    .listener_arn(self.s.listener.clone().unwrap_or_default())
                    .default_actions(action)
                    .send()
                    .await
                    .map_err(|e| error(format!("weight the listener to {what}"), e))?;
            }
        }
        // What the load balancer holds now, read back.
        let now = Self::weights(&self.forward(c).await?);
        Ok([Slot::Blue, Slot::Green]
            .into_iter()
            .filter(|s| weights.iter().any(|(w, _)| w == s))
            .map(|s| (s, now.get(&c.target_groups[&s]).copied().unwrap_or(0)))
            .collect())
    }

    /// Stop `n` running tasks of the colour's service (ECS starts others
    /// in their place, as when a task dies).
    async fn stop_instances(
        &self,
        _op: &Op<'_>,
        slot: Slot,
        n: usize,
    ) -> Result<Vec<String>, ProviderError> {
        let c = self.clients().await?;
        let service = self.service_name(slot);
        let out = c
            .ecs
            .list_tasks()
            .cluster(&self.s.cluster)
            .service_name(&service)
            .desired_status(aws_sdk_ecs::types::DesiredStatus::Running)
            .send()
            .await
            .map_err(|e| error(format!("list the tasks of {service}"), e))?;
        let mut stopped = Vec::new();
        for arn in out.task_arns().iter().take(n) {
            c.ecs
                .stop_task()
                .cluster(&self.s.cluster)
                .task(arn)
                .reason("copilot drill chaos")
                .send()
                .await
                .map_err(|e| error(format!("stop task {arn}"), e))?;
            stopped.push(arn.clone());
        }
        if stopped.is_empty() {
            return Err(ProviderError::new(
                ErrorKind::NotFound,
                format!("stop a task of {service}"),
                "it runs no task",
            ));
        }
        Ok(stopped)
    }

    /// A cohort is routed by listener rules: for each five shops (the
    /// ALB's limit of condition values per rule), one rule on the
    /// `X-Shopify-Shop-Domain` header and one on the `shop` query parameter,
    /// forwarding to the cohort's colour, at the lowest free priorities.
    /// Rules an earlier call made are deleted first, so a retry or a resume
    /// ends with one set; `None` deletes them.
    async fn route_cohort(
        &self,
        _op: &Op<'_>,
        cohort: Option<&CohortRoute>,
    ) -> Result<(), ProviderError> {
        let c = self.clients().await?;
        let Some(listener) = self.s.listener.clone() else {
            return Err(ProviderError::unavailable(
                "route a cohort",
                "cohort steps on ECS need `listener:`: the rules of a cohort would have to repeat the conditions of `rule:`",
            ));
        };
        let (ours, taken) = self.cohort_rules(c, &listener).await?;
        for arn in ours {
            c.elb
                .delete_rule()
                .rule_arn(&arn)
                .send()
                .await
                .map_err(|e| error(format!("delete cohort rule {arn}"), e))?;
        }
        let Some(cohort) = cohort else {
            return Ok(());
        };
        let tg = &c.target_groups[&cohort.slot];
        let forward = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(tg)
            .build();
        let mut priority = 0;
        for shops in cohort.shops.chunks(MAX_CONDITION_VALUES) {
            let header = RuleCondition::builder()
                .field("http-header")
                .http_header_config(
                    HttpHeaderConditionConfig::builder()
                        .http_header_name(SHOP_HEADER)
                        .set_values(Some(shops.to_vec()))
                        .build(),
                )
                .build();
            let query = RuleCondition::builder()
                .field("query-string")
                .query_string_config(
                    QueryStringConditionConfig::builder()
                        .set_values(Some(
                            shops
                                .iter()
                                .map(|s| {
                                    QueryStringKeyValuePair::builder()
                                        .key(SHOP_PARAMETER)
                                        .value(s)
                                        .build()
                                })
                                .collect(),
                        ))
                        .build(),
                )
                .build();
            for condition in [header, query] {
                priority += 1;
                while taken.contains(&priority) {
                    priority += 1;
                }
                c.elb
                    .create_rule()
                    .listener_arn(&listener)
                    .priority(priority)
                    .conditions(condition)
                    .actions(forward.clone())
                    .send()
                    .await
                    .map_err(|e| error(format!("create a rule for cohort {}", cohort.name), e))?;
            }
        }
        Ok(())
    }

    async fn restore(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
        recorded: Option<&Handle>,
    ) -> Result<Option<Handle>, ProviderError> {
        let Some(td) = recorded.and_then(handle_td) else {
            return Ok(None);
        };
        let c = self.clients().await?;
        let rev = match self.revision(c, td).await {
            Ok(r) => r,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if rev.status != "ACTIVE" || rev.release_id != release.release_id {
            return Ok(None);
        }
        let service = self.service_name(slot);
        op.progress.line(&format!(
            "updating service {service} back to {} (release {}) with {} tasks",
            td.rsplit('/').next().unwrap_or(td),
            release.version,
            self.instances
        ));
        self.update_to(c, slot, td, &format!("update service {service}"))
            .await?;
        Ok(Some(
            json!({ "service": service, "task_definition": td, "launch": op.key }),
        ))
    }

    async fn platform_metric(
        &self,
        slot: Slot,
        metric: &copilot_core::model::Metric,
        window: Duration,
    ) -> Result<Option<(f64, f64)>, String> {
        super::metrics::read(self, slot, metric, window)
            .await
            .map_err(|e| e.to_string())
    }

    async fn remove(&self, _op: &Op<'_>, slot: Slot) -> Result<(), ProviderError> {
        let c = self.clients().await?;
        let service = self.service_name(slot);
        self.scale(c, slot, 0, &format!("scale {service} to 0"))
            .await
    }

    async fn down(&self) -> Result<(), ProviderError> {
        let c = self.clients().await?;
        for slot in [Slot::Blue, Slot::Green] {
            let service = self.service_name(slot);
            self.scale(c, slot, 0, &format!("scale {service} to 0"))
                .await?;
        }
        Ok(())
    }
}
