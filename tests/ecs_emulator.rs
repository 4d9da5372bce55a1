//! AWS for the ECS provider's tests: moto's server is the AWS API (ECS,
//! ELBv2, CloudWatch, RDS, Secrets Manager, EC2), and three parts stand in
//! for what moto does not do, each doing it against moto's own state:
//!
//! - an **ECS agent** watches the services in moto and runs each desired task
//!   as a real `copilot-service` process on loopback (its environment and
//!   its Secrets Manager secrets as ECS injects them), registers the task in
//!   its service's target group once `/health` answers, drains and stops
//!   tasks of older revisions once the new ones are healthy, and, for a
//!   service with the deployment circuit breaker, rolls the service back to
//!   its last completed revision in moto after three tasks failed;
//! - an **ALB data plane** forwards requests over the targets registered in
//!   moto with the weights it reads from moto's listener, and publishes the
//!   per-target-group `RequestCount`, `HTTPCode_Target_5XX_Count` and
//!   `TargetResponseTime` into moto's CloudWatch every second, as an ALB does;
//! - a **proxy in front of moto** (the endpoint copilot is given) injects
//!   throttling, 5xx and rejected credentials, and completes moto's
//!   `DescribeServices` answers with the deployments, counts and events the
//!   agent's tasks make (moto starts no deployment on `UpdateService`).
//!
//! The infrastructure copilot deploys into (VPC, load balancer, listener,
//! target groups, cluster, the two colour services) is created here with the
//! SDK against moto, as infrastructure code would create it.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::LoadBalancer as EcsLb;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, ProtocolEnum, TargetDescription, TargetGroupTuple,
    TargetTypeEnum,
};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::common::{PASSED_THROUGH, free_port};

pub const REGION: &str = "us-east-1";
pub const CLUSTER: &str = "copilot-production";
pub const SERVICE: &str = "copilot-service";
pub const WEBHOOK_SECRET_NAME: &str = "copilot/production/shopify-webhook-secret";
/// The access key the proxy answers as AWS answers a key it does not know.
pub const REJECTED_KEY: &str = "AKIAREJECTEDKEY00000";

/// What the next matching AWS request gets instead of its answer.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// `ThrottlingException` (ECS) or `Throttling` (query APIs), 400.
    Throttle,
    /// A bare 503.
    Unavailable,
    /// Carried out, its answer held this long (past the client's timeout).
    LostAnswer(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TaskState {
    Running,
    Stopping,
    Stopped,
}

struct Task {
    id: String,
    service: String,
    td: String,
    /// Each task has an address of its own, as with `awsvpc` (moto keys
    /// targets by address).
    ip: String,
    port: u16,
    child: Option<Child>,
    state: TaskState,
    registered: bool,
    failed_checks: u32,
    stop_at: Option<Instant>,
}

impl Task {
    /// Out of its target group now, stopped `after` (the deregistration
    /// delay); the target to deregister, if it was registered.
    fn drain(&mut self, after: Duration) -> Option<(String, u16)> {
        self.state = TaskState::Stopping;
        self.stop_at = Some(Instant::now() + after);
        std::mem::take(&mut self.registered).then(|| (self.ip.clone(), self.port))
    }
}

#[derive(Default)]
struct ServiceState {
    circuit_breaker: bool,
    /// Tasks of a revision that exited or failed their checks.
    failures: BTreeMap<String, u32>,
    /// Revisions whose deployment failed, with why.
    failed: BTreeMap<String, String>,
    /// Newest first, as ECS lists them.
    events: VecDeque<String>,
    /// The last revision whose deployment completed.
    completed: Option<String>,
    /// A task stopped through the API is replaced by the scheduler after
    /// a moment (seconds on ECS), not at once.
    replace_after: Option<Instant>,
}

/// A task definition's container, as the agent starts it.
#[derive(Clone)]
struct Container {
    image: String,
    command: Vec<String>,
    env: Vec<(String, String)>,
    secrets: Vec<(String, String)>,
    /// Why ECS cannot give the task its secrets, when it cannot.
    secret_error: Option<String>,
}

struct World {
    /// The emulator is being dropped: no task's process starts any more
    /// (the agent may still be mid-round on the runtime).
    closed: bool,
    tasks: Vec<Task>,
    services: BTreeMap<String, ServiceState>,
    definitions: BTreeMap<String, Container>,
    faults: VecDeque<(Option<String>, Fault)>,
    requests: Vec<String>,
    seq: u64,
    root: PathBuf,
    service_bin: PathBuf,
    moto: String,
}

type Shared = Arc<Mutex<World>>;

/// A listener rule as the ALB evaluates it: every condition must match
/// (values compared without regard to case, as the ALB does).
#[derive(Clone, Debug)]
struct Rule {
    priority: i32,
    /// (header name, values): one value must equal the header.
    headers: Vec<(String, Vec<String>)>,
    /// (key, value) pairs: one must be in the query string.
    queries: Vec<Vec<(Option<String>, String)>>,
    target_group: String,
}

impl Rule {
    fn matches(&self, headers: &HeaderMap, uri: &Uri) -> bool {
        let query: Vec<(String, String)> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_ascii_lowercase()))
            .collect();
        self.headers.iter().all(|(name, values)| {
            headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| values.iter().any(|x| x.eq_ignore_ascii_case(v)))
        }) && self.queries.iter().all(|pairs| {
            pairs.iter().any(|(k, v)| {
                query.iter().any(|(qk, qv)| {
                    k.as_ref().is_none_or(|k| k.eq_ignore_ascii_case(qk))
                        && v.eq_ignore_ascii_case(qv)
                })
            })
        })
    }
}

/// The load balancer's state as the data plane reads it from moto.
#[derive(Default)]
struct Plane {
    /// Target group ARN -> weight.
    weights: Vec<(String, i32)>,
    /// The listener's rules other than the default, by priority.
    rules: Vec<Rule>,
    /// Target group ARN -> healthy targets (`ip:port` on loopback).
    targets: BTreeMap<String, Vec<String>>,
    /// Target group ARN -> (requests, 5xx, seconds) since the last publish.
    counts: BTreeMap<String, (u64, u64, f64)>,
    /// How many times the ALB has read the listener and the targets whole.
    rounds: u64,
}

pub struct Aws {
    world: Shared,
    plane: Arc<Mutex<Plane>>,
    moto: Child,
    /// Where copilot reaches AWS (the proxy).
    pub endpoint: String,
    /// Where the arena's traffic enters (the emulated ALB).
    pub alb_url: String,
    pub listener_arn: String,
    pub target_groups: BTreeMap<&'static str, String>,
    pub ecs: aws_sdk_ecs::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub rds: aws_sdk_rds::Client,
    _dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

fn moto_server() -> PathBuf {
    let bin = std::env::var_os("COPILOT_TEST_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::path::absolute("target/moto/bin/moto_server").unwrap());
    assert!(
        bin.exists(),
        "moto is not installed at {}: run scripts/test.sh (it installs moto[server] 5.2.5 into target/moto)",
        bin.display()
    );
    bin
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .load()
        .await
}

/// A call to one of moto's query or JSON APIs without an SDK of its own
/// (EC2, Secrets Manager): moto routes by the credential scope's service.
async fn raw(moto: &str, service: &str, target: Option<&str>, body: String) -> String {
    let mut req = reqwest::Client::new().post(format!("{moto}/")).header(
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, SignedHeaders=host, Signature=0"
        ),
    );
    req = match target {
        Some(t) => req
            .header("x-amz-target", t)
            .header("content-type", "application/x-amz-json-1.1"),
        None => req.header("content-type", "application/x-www-form-urlencoded"),
    };
    let r = req.body(body).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{service} {target:?}: {status} {text}");
    text
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text.find(open).map(|i| i + open.len()).unwrap_or(0);
    let end = text[start..].find(close).map_or(text.len(), |i| start + i);
    &text[start..end]
}

impl Aws {
    /// moto with the production infrastructure: a load balancer whose
    /// listener forwards to `copilot-production-blue` (all) and `-green`, a
    /// cluster with the services `copilot-service-blue` and `-green` at zero
    /// tasks (`circuit_breaker` on both when asked), and the webhook secret.
    pub fn start(circuit_breaker: bool) -> Aws {
        let dir = tempfile::tempdir().unwrap();
        let moto_port = free_port();
        let log = std::fs::File::create(dir.path().join("moto.log")).unwrap();
        let moto = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p"])
            .arg(moto_port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start moto_server");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", moto_port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let moto_url = format!("http://127.0.0.1:{moto_port}");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let conf = runtime.block_on(sdk_config(&moto_url));
        let ecs = aws_sdk_ecs::Client::new(&conf);
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&conf);
        let cloudwatch = aws_sdk_cloudwatch::Client::new(&conf);
        let rds = aws_sdk_rds::Client::new(&conf);
        let (listener_arn, target_groups, lb_dimension) = runtime.block_on(async {
            let vpc = raw(
                &moto_url,
                "ec2",
                None,
                "Action=CreateVpc&CidrBlock=10.0.0.0%2F16&Version=2016-11-15".into(),
            )
            .await;
            let vpc = between(&vpc, "<vpcId>", "</vpcId>").to_string();
            let mut subnets = Vec::new();
            for (i, az) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
                let s = raw(
                    &moto_url,
                    "ec2",
                    None,
                    format!("Action=CreateSubnet&VpcId={vpc}&CidrBlock=10.0.{i}.0%2F24&AvailabilityZone={az}&Version=2016-11-15"),
                )
                .await;
                subnets.push(between(&s, "<subnetId>", "</subnetId>").to_string());
            }
            let lb = elb
                .create_load_balancer()
                .name(CLUSTER)
                .set_subnets(Some(subnets))
                .send()
                .await
                .unwrap();
            let lb_arn = lb.load_balancers()[0].load_balancer_arn().unwrap().to_string();
            let mut tgs = BTreeMap::new();
            for colour in ["blue", "green"] {
                let tg = elb
                    .create_target_group()
                    .name(format!("{CLUSTER}-{colour}"))
                    .protocol(ProtocolEnum::Http)
                    .port(8080)
                    .vpc_id(&vpc)
                    .target_type(TargetTypeEnum::Ip)
                    .health_check_path("/health")
                    .send()
                    .await
                    .unwrap();
                tgs.insert(
                    colour,
                    tg.target_groups()[0].target_group_arn().unwrap().to_string(),
                );
            }
            let listener = elb
                .create_listener()
                .load_balancer_arn(&lb_arn)
                .protocol(ProtocolEnum::Http)
                .port(80)
                .default_actions(forward(&[(&tgs["blue"], 100), (&tgs["green"], 0)]))
                .send()
                .await
                .unwrap();
            let listener_arn = listener.listeners()[0].listener_arn().unwrap().to_string();
            ecs.create_cluster().cluster_name(CLUSTER).send().await.unwrap();
            // What infrastructure code registers before copilot's first release.
            let bootstrap = ecs
                .register_task_definition()
                .family(SERVICE)
                .container_definitions(
                    aws_sdk_ecs::types::ContainerDefinition::builder()
                        .name(SERVICE)
                        .image("public.ecr.aws/docker/library/nginx:bootstrap")
                        .memory(512)
                        .build(),
                )
                .send()
                .await
                .unwrap();
            let bootstrap = bootstrap
                .task_definition()
                .unwrap()
                .task_definition_arn()
                .unwrap()
                .to_string();
            for colour in ["blue", "green"] {
                ecs.create_service()
                    .cluster(CLUSTER)
                    .service_name(format!("{SERVICE}-{colour}"))
                    .task_definition(&bootstrap)
                    .desired_count(0)
                    .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
                    .load_balancers(
                        EcsLb::builder()
                            .target_group_arn(&tgs[colour])
                            .container_name(SERVICE)
                            .container_port(8080)
                            .build(),
                    )
                    .send()
                    .await
                    .unwrap();
            }
            raw(
                &moto_url,
                "secretsmanager",
                Some("secretsmanager.CreateSecret"),
                json!({ "Name": WEBHOOK_SECRET_NAME, "SecretString": "ecs-kept-secret" }).to_string(),
            )
            .await;
            let lb_dim = lb_arn
                .split_once(":loadbalancer/")
                .map(|(_, r)| r.to_string())
                .unwrap();
            (listener_arn, tgs, lb_dim)
        });
        let world = Arc::new(Mutex::new(World {
            closed: false,
            tasks: Vec::new(),
            services: ["blue", "green"]
                .iter()
                .map(|c| {
                    (
                        format!("{SERVICE}-{c}"),
                        ServiceState {
                            circuit_breaker,
                            ..ServiceState::default()
                        },
                    )
                })
                .collect(),
            definitions: BTreeMap::new(),
            faults: VecDeque::new(),
            requests: Vec::new(),
            seq: 0,
            root: dir.path().to_path_buf(),
            service_bin: crate::common::service_bin(),
            moto: moto_url.clone(),
        }));
        let plane = Arc::new(Mutex::new(Plane::default()));
        let proxy_port = free_port();
        let alb_port = free_port();
        {
            let w = world.clone();
            let proxy = Router::new().fallback(proxy).with_state(Proxy {
                world: w.clone(),
                http: reqwest::Client::new(),
            });
            runtime.spawn(async move {
                let l = tokio::net::TcpListener::bind(("127.0.0.1", proxy_port))
                    .await
                    .unwrap();
                axum::serve(l, proxy).await.unwrap();
            });
            let alb = Router::new().fallback(data_plane).with_state(Alb {
                plane: plane.clone(),
                http: reqwest::Client::new(),
                next: Arc::new(AtomicU64::new(0x9e37_79b9_7f4a_7c15)),
            });
            runtime.spawn(async move {
                let l = tokio::net::TcpListener::bind(("127.0.0.1", alb_port))
                    .await
                    .unwrap();
                axum::serve(l, alb).await.unwrap();
            });
            runtime.spawn(agent(w, ecs.clone(), elb.clone()));
            runtime.spawn(read_plane(
                plane.clone(),
                elb.clone(),
                listener_arn.clone(),
                target_groups.values().cloned().collect(),
            ));
            runtime.spawn(publish_metrics(plane.clone(), cloudwatch, lb_dimension));
        }
        Aws {
            world,
            plane,
            moto,
            endpoint: format!("http://127.0.0.1:{proxy_port}"),
            alb_url: format!("http://127.0.0.1:{alb_port}"),
            listener_arn,
            target_groups,
            ecs,
            elb,
            rds,
            _dir: dir,
            runtime: Some(runtime),
        }
    }

    /// The variables a copilot command needs to reach this AWS.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "AKIAEMULATEDKEY00000".into()),
            ("AWS_SECRET_ACCESS_KEY", "emulated-secret-access-key".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("COPILOT_PROVIDER_REQUEST_TIMEOUT", "3s".into()),
        ]
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.as_ref().unwrap().block_on(f)
    }

    pub fn inject(&self, operation: Option<&str>, faults: &[Fault]) {
        let mut w = self.world.lock().unwrap();
        for f in faults {
            w.faults.push_back((operation.map(str::to_string), *f));
        }
    }

    pub fn pending_faults(&self) -> usize {
        self.world.lock().unwrap().faults.len()
    }

    /// Operations copilot asked of AWS, in order (`DescribeServices`, `ModifyListener`).
    pub fn requests(&self) -> Vec<String> {
        self.world.lock().unwrap().requests.clone()
    }

    /// (service, task definition ARN, running) of every live task.
    pub fn tasks(&self) -> Vec<(String, String, bool)> {
        self.world
            .lock()
            .unwrap()
            .tasks
            .iter()
            .filter(|t| t.state != TaskState::Stopped)
            .map(|t| {
                (
                    t.service.clone(),
                    t.td.clone(),
                    t.state == TaskState::Running,
                )
            })
            .collect()
    }

    /// Wait until the ALB has read moto's listener and targets whole at
    /// least once since this call (it reads them ten times a second, but a
    /// loaded machine slows moto down); at most `within`.
    pub fn alb_caught_up(&self, within: Duration) {
        let seen = self.plane.lock().unwrap().rounds;
        let deadline = std::time::Instant::now() + within;
        // The round under way may have read moto before this call: wait for the next one.
        while self.plane.lock().unwrap().rounds < seen + 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The listener's rules other than the default, as moto holds them:
    /// (priority, header values, query values, target group name).
    pub fn rules(&self) -> Vec<(i32, Vec<String>, Vec<String>, String)> {
        self.plane
            .lock()
            .unwrap()
            .rules
            .iter()
            .map(|r| {
                (
                    r.priority,
                    r.headers.iter().flat_map(|(_, v)| v.clone()).collect(),
                    r.queries.iter().flatten().map(|(_, v)| v.clone()).collect(),
                    r.target_group
                        .rsplit('/')
                        .nth(1)
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    }

    /// The listener's weights by colour, as moto holds them.
    pub fn weights(&self) -> BTreeMap<String, i32> {
        let plane = self.plane.lock().unwrap();
        plane
            .weights
            .iter()
            .filter_map(|(arn, w)| {
                let colour = self.target_groups.iter().find(|(_, a)| *a == arn)?.0;
                Some((colour.to_string(), *w))
            })
            .collect()
    }

    /// (service, task definition, desired) as moto holds them.
    pub fn services(&self) -> Vec<(String, String, i32)> {
        self.block_on(async {
            let out = self
                .ecs
                .describe_services()
                .cluster(CLUSTER)
                .services(format!("{SERVICE}-blue"))
                .services(format!("{SERVICE}-green"))
                .send()
                .await
                .unwrap();
            out.services()
                .iter()
                .map(|s| {
                    (
                        s.service_name().unwrap().to_string(),
                        s.task_definition().unwrap_or_default().to_string(),
                        s.desired_count(),
                    )
                })
                .collect()
        })
    }

    /// Set the listener's weights by hand, as someone in the console would.
    /// The team's own service, as it ran before copilot: `colour`'s
    /// service on a task definition registered by hand (no copilot tags but
    /// the arena's, as a team might copy), `desired` tasks of `image`.
    pub fn run_by_hand(&self, colour: &str, image: &str, desired: i32) {
        use aws_sdk_ecs::types::{ContainerDefinition, KeyValuePair, PortMapping, Tag};
        self.block_on(async {
            let env = [
                ("SHOPIFY_API_VERSION", "2026-10"),
                ("DATABASE_URL", "sqlite://copilot.db"),
                ("SHOPIFY_WEBHOOK_SECRET", "by-hand"),
                ("COPILOT_RELEASE", "by-hand"),
            ];
            let mut container = ContainerDefinition::builder()
                .name(SERVICE)
                .image(image)
                .memory(512)
                .port_mappings(PortMapping::builder().container_port(8080).build());
            for (k, v) in env {
                container = container.environment(KeyValuePair::builder().name(k).value(v).build());
            }
            let td = self
                .ecs
                .register_task_definition()
                .family(SERVICE)
                .container_definitions(container.build())
                .tags(
                    Tag::builder()
                        .key("copilot:arena")
                        .value("production")
                        .build(),
                )
                .send()
                .await
                .unwrap();
            let arn = td
                .task_definition()
                .unwrap()
                .task_definition_arn()
                .unwrap()
                .to_string();
            self.ecs
                .update_service()
                .cluster(CLUSTER)
                .service(format!("{SERVICE}-{colour}"))
                .task_definition(arn)
                .desired_count(desired)
                .send()
                .await
                .unwrap();
        });
    }

    pub fn weigh_by_hand(&self, blue: i32, green: i32) {
        self.block_on(async {
            self.elb
                .modify_listener()
                .listener_arn(&self.listener_arn)
                .default_actions(forward(&[
                    (&self.target_groups["blue"], blue),
                    (&self.target_groups["green"], green),
                ]))
                .send()
                .await
                .unwrap();
        });
    }
}

impl Drop for Aws {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        let mut w = self.world.lock().unwrap();
        w.closed = true;
        for t in &mut w.tasks {
            if let Some(c) = &mut t.child {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = self.moto.kill();
        let _ = self.moto.wait();
    }
}

pub fn forward(groups: &[(&String, i32)]) -> Action {
    let mut f = ForwardActionConfig::builder();
    for (arn, w) in groups {
        f = f.target_groups(
            TargetGroupTuple::builder()
                .target_group_arn(arn.as_str())
                .weight(*w)
                .build(),
        );
    }
    Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .forward_config(f.build())
        .build()
}

// ---------------------------------------------------------------- the agent

async fn container_of(w: &Shared, ecs: &aws_sdk_ecs::Client, td: &str) -> Option<Container> {
    if let Some(c) = w.lock().unwrap().definitions.get(td) {
        return Some(c.clone());
    }
    let out = ecs
        .describe_task_definition()
        .task_definition(td)
        .send()
        .await
        .ok()?;
    let c = out
        .task_definition()?
        .container_definitions()
        .first()?
        .clone();
    let moto = w.lock().unwrap().moto.clone();
    let mut secrets = Vec::new();
    let mut secret_error = None;
    for s in c.secrets() {
        // As ECS: a Secrets Manager secret is named by its full ARN (only
        // SSM parameters may be given by name).
        if !s.value_from().starts_with("arn:") {
            secret_error = Some(format!(
                "ResourceInitializationError: unable to pull secrets or registry auth: retrieve secret from {}: invalid ARN",
                s.value_from()
            ));
            continue;
        }
        let v = raw(
            &moto,
            "secretsmanager",
            Some("secretsmanager.GetSecretValue"),
            json!({ "SecretId": s.value_from() }).to_string(),
        )
        .await;
        let v: Value = serde_json::from_str(&v).unwrap();
        secrets.push((
            s.name().to_string(),
            v["SecretString"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let container = Container {
        image: c.image().unwrap_or_default().to_string(),
        command: c.command().to_vec(),
        env: c
            .environment()
            .iter()
            .filter_map(|kv| Some((kv.name()?.to_string(), kv.value()?.to_string())))
            .collect(),
        secrets,
        secret_error,
    };
    w.lock()
        .unwrap()
        .definitions
        .insert(td.to_string(), container.clone());
    Some(container)
}

fn start_task(w: &mut World, service: &str, td: &str, c: &Container) {
    if w.closed {
        return;
    }
    w.seq += 1;
    let id = format!("{:032x}", 0x5eed_0000u64 + w.seq * 104_729);
    let port = free_port();
    let ip = format!("127.0.{}.{}", 1 + w.seq / 250, 2 + w.seq % 250);
    let dir = w.root.join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let mut task = Task {
        id: id.clone(),
        service: service.to_string(),
        td: td.to_string(),
        ip: ip.clone(),
        port,
        child: None,
        state: TaskState::Running,
        registered: false,
        failed_checks: 0,
        stop_at: None,
    };
    if let Some(why) = &c.secret_error {
        task.state = TaskState::Stopped;
        let s = w.services.entry(service.to_string()).or_default();
        *s.failures.entry(td.to_string()).or_default() += 1;
        s.events
            .push_front(format!("(service {service}) task {id} stopped: {why}"));
    } else if c.image.contains("never-starts") {
        // CannotPullContainerError: the task stops before it ran.
        task.state = TaskState::Stopped;
        let s = w.services.entry(service.to_string()).or_default();
        *s.failures.entry(td.to_string()).or_default() += 1;
        s.events.push_front(format!(
            "(service {service}) task {id} stopped: CannotPullContainerError: pull image manifest has been retried 5 time(s)"
        ));
    } else {
        let mut cmd = Command::new(&w.service_bin);
        match c.command.split_first() {
            Some((prog, args)) if prog == "copilot-service" => {
                cmd.args(args);
            }
            _ => {
                cmd.arg("serve");
            }
        }
        cmd.current_dir(&dir)
            .env_clear()
            .envs(
                PASSED_THROUGH
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
            )
            .envs(c.env.iter().cloned())
            .envs(c.secrets.iter().cloned())
            .env("PORT", port.to_string())
            .env("BIND_ADDRESS", &ip)
            .env(
                "ECS_CONTAINER_METADATA_URI_V4",
                format!("http://169.254.170.2/v4/{id}"),
            )
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("out.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("err.log")).unwrap());
        task.child = Some(cmd.spawn().expect("start a task's process"));
    }
    w.tasks.push(task);
}

/// The ECS agent and the target group's health checker, against moto.
async fn agent(w: Shared, ecs: aws_sdk_ecs::Client, elb: aws_sdk_elasticloadbalancingv2::Client) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let Ok(out) = ecs
            .describe_services()
            .cluster(CLUSTER)
            .services(format!("{SERVICE}-blue"))
            .services(format!("{SERVICE}-green"))
            .send()
            .await
        else {
            continue;
        };
        for svc in out.services() {
            let name = svc.service_name().unwrap_or_default().to_string();
            let td = svc.task_definition().unwrap_or_default().to_string();
            let desired = svc.desired_count().max(0) as usize;
            let tg = svc
                .load_balancers()
                .first()
                .and_then(|l| l.target_group_arn())
                .unwrap_or_default()
                .to_string();
            let container = container_of(&w, &ecs, &td).await;
            // Health checks of this service's running tasks.
            let checks: Vec<(String, String, bool)> = {
                let w = w.lock().unwrap();
                w.tasks
                    .iter()
                    .filter(|t| {
                        t.service == name && t.state == TaskState::Running && t.child.is_some()
                    })
                    .map(|t| {
                        let unhealthy = w
                            .definitions
                            .get(&t.td)
                            .is_some_and(|c| c.image.contains("unhealthy"));
                        (t.id.clone(), format!("{}:{}", t.ip, t.port), unhealthy)
                    })
                    .collect()
            };
            let mut results = Vec::new();
            for (id, addr, unhealthy) in checks {
                let ok = !unhealthy
                    && http
                        .get(format!("http://{addr}/health"))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                results.push((id, ok));
            }
            let mut register = Vec::new();
            let mut deregister = Vec::new();
            let mut roll_back_to = None;
            {
                let mut guard = w.lock().unwrap();
                let world = &mut *guard;
                for t in world.tasks.iter_mut().filter(|t| t.service == name) {
                    // A process that exited stops its task.
                    if let Some(c) = &mut t.child
                        && let Ok(Some(status)) = c.try_wait()
                    {
                        t.child = None;
                        if t.state == TaskState::Running {
                            let s = world.services.entry(name.clone()).or_default();
                            *s.failures.entry(t.td.clone()).or_default() += 1;
                            s.events.push_front(format!(
                                "(service {name}) task {} stopped: Essential container in task exited (exit code {})",
                                t.id,
                                status.code().unwrap_or(-1)
                            ));
                        }
                        t.state = TaskState::Stopped;
                        if t.registered {
                            t.registered = false;
                            deregister.push((t.ip.clone(), t.port));
                        }
                    }
                    if let Some((_, ok)) = results.iter().find(|(id, _)| *id == t.id)
                        && t.state == TaskState::Running
                    {
                        if *ok {
                            t.failed_checks = 0;
                            if !t.registered {
                                t.registered = true;
                                register.push((t.ip.clone(), t.port));
                            }
                        } else {
                            t.failed_checks += 1;
                            // Failing the target group's checks: ECS replaces the task.
                            if t.failed_checks >= 8 {
                                let s = world.services.entry(name.clone()).or_default();
                                *s.failures.entry(t.td.clone()).or_default() += 1;
                                s.events.push_front(format!(
                                    "(service {name}) task {} failed ELB health checks in target-group {tg}",
                                    t.id
                                ));
                                deregister.extend(t.drain(Duration::ZERO));
                            }
                        }
                    }
                    if t.state == TaskState::Stopping
                        && t.stop_at.is_some_and(|at| at <= Instant::now())
                    {
                        if let Some(c) = &mut t.child {
                            let _ = Command::new("kill")
                                .args(["-TERM", &c.id().to_string()])
                                .status();
                            let _ = c.wait();
                        }
                        t.child = None;
                        t.state = TaskState::Stopped;
                    }
                }
                let state = world.services.entry(name.clone()).or_default();
                let failures = state.failures.get(&td).copied().unwrap_or(0);
                let failed_already = state.failed.contains_key(&td);
                if failures >= 3 && !failed_already && state.completed.as_deref() != Some(&td) {
                    let why = "ECS deployment circuit breaker: tasks failed to start.".to_string();
                    state.failed.insert(td.clone(), why.clone());
                    if state.circuit_breaker
                        && let Some(prev) = state.completed.clone()
                    {
                        state.events.push_front(format!(
                            "(service {name}) deployment failed: tasks failed to start. rolling back to {prev}"
                        ));
                        roll_back_to = Some(prev);
                    }
                }
                let rolling_back = roll_back_to.is_some();
                let current: Vec<usize> = world
                    .tasks
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| {
                        t.service == name && t.td == td && t.state == TaskState::Running
                    })
                    .map(|(i, _)| i)
                    .collect();
                let failed_now = world.services[&name].failed.contains_key(&td);
                let scheduling = world.services[&name]
                    .replace_after
                    .is_none_or(|at| at <= Instant::now());
                if !rolling_back
                    && !failed_now
                    && scheduling
                    && current.len() < desired
                    && let Some(c) = &container
                {
                    for _ in current.len()..desired {
                        start_task(world, &name, &td, c);
                    }
                }
                // Beyond desired: the newest go first.
                for &i in current.iter().skip(desired).rev() {
                    deregister.extend(world.tasks[i].drain(Duration::from_millis(300)));
                }
                // Older revisions drain once the new one is healthy (minimum healthy 100%).
                let healthy_now = world
                    .tasks
                    .iter()
                    .filter(|t| t.service == name && t.td == td && t.registered)
                    .count();
                if healthy_now >= desired || failed_now {
                    for t in world.tasks.iter_mut().filter(|t| {
                        t.service == name && t.td != td && t.state == TaskState::Running
                    }) {
                        deregister.extend(t.drain(Duration::from_millis(300)));
                    }
                }
                let old_left = world
                    .tasks
                    .iter()
                    .any(|t| t.service == name && t.td != td && t.state != TaskState::Stopped);
                if healthy_now == desired && !old_left && !failed_now {
                    let s = world.services.get_mut(&name).unwrap();
                    if s.completed.as_deref() != Some(&td) {
                        s.completed = Some(td.clone());
                        s.events
                            .push_front(format!("(service {name}) has reached a steady state."));
                    }
                }
            }
            if let Some(prev) = roll_back_to {
                let _ = ecs
                    .update_service()
                    .cluster(CLUSTER)
                    .service(&name)
                    .task_definition(prev)
                    .send()
                    .await;
            }
            if !register.is_empty() {
                let mut call = elb.register_targets().target_group_arn(&tg);
                for (ip, port) in &register {
                    call = call.targets(
                        TargetDescription::builder()
                            .id(ip)
                            .port(i32::from(*port))
                            .build(),
                    );
                }
                let _ = call.send().await;
            }
            if !deregister.is_empty() {
                let mut call = elb.deregister_targets().target_group_arn(&tg);
                for (ip, port) in &deregister {
                    call = call.targets(
                        TargetDescription::builder()
                            .id(ip)
                            .port(i32::from(*port))
                            .build(),
                    );
                }
                let _ = call.send().await;
            }
        }
    }
}

/// The deployments, counts and events ECS would answer for `name` now.
fn service_view(w: &World, name: &str, td: &str, desired: i64) -> Value {
    let state = w.services.get(name);
    let live = |rev: &str| {
        w.tasks
            .iter()
            .filter(|t| t.service == name && t.td == rev && t.state == TaskState::Running)
            .count() as i64
    };
    let running = live(td);
    let failed_tasks = state.and_then(|s| s.failures.get(td)).copied().unwrap_or(0);
    let old: Vec<&str> = {
        let mut o: Vec<&str> = w
            .tasks
            .iter()
            .filter(|t| t.service == name && t.td != td && t.state != TaskState::Stopped)
            .map(|t| t.td.as_str())
            .collect();
        o.sort();
        o.dedup();
        o
    };
    let id = |rev: &str| {
        format!(
            "ecs-svc/{:016}",
            rev.len() as u64 * 7919 + rev.bytes().map(u64::from).sum::<u64>()
        )
    };
    let failed = state.and_then(|s| s.failed.get(td));
    let (rollout, reason) = match failed {
        Some(why) => ("FAILED", why.clone()),
        None if running == desired && old.is_empty() => {
            ("COMPLETED", format!("ECS deployment {} completed.", id(td)))
        }
        None => (
            "IN_PROGRESS",
            format!("ECS deployment {} in progress.", id(td)),
        ),
    };
    let now = chrono::Utc::now().timestamp() as f64;
    let mut deployments = vec![json!({
        "id": id(td), "status": "PRIMARY", "taskDefinition": td, "desiredCount": desired,
        "pendingCount": (desired - running).max(0), "runningCount": running, "failedTasks": failed_tasks,
        "rolloutState": rollout, "rolloutStateReason": reason, "launchType": "FARGATE",
        "createdAt": now, "updatedAt": now,
    })];
    for rev in &old {
        let failed = state.and_then(|s| s.failed.get(*rev));
        deployments.push(json!({
            "id": id(rev), "status": "ACTIVE", "taskDefinition": rev, "desiredCount": 0,
            "pendingCount": 0, "runningCount": live(rev), "failedTasks": state.and_then(|s| s.failures.get(*rev)).copied().unwrap_or(0),
            "rolloutState": if failed.is_some() { "FAILED" } else { "COMPLETED" },
            "rolloutStateReason": failed.cloned().unwrap_or_default(), "launchType": "FARGATE",
            "createdAt": now, "updatedAt": now,
        }));
    }
    // A failed revision the circuit breaker rolled back from stays listed.
    if let Some(s) = state {
        for (rev, why) in &s.failed {
            if rev != td && !old.contains(&rev.as_str()) {
                deployments.push(json!({
                    "id": id(rev), "status": "ACTIVE", "taskDefinition": rev, "desiredCount": 0,
                    "pendingCount": 0, "runningCount": 0, "failedTasks": s.failures.get(rev).copied().unwrap_or(0),
                    "rolloutState": "FAILED", "rolloutStateReason": why, "launchType": "FARGATE",
                    "createdAt": now, "updatedAt": now,
                }));
            }
        }
    }
    let events: Vec<Value> = state
        .map(|s| {
            s.events
                .iter()
                .take(20)
                .enumerate()
                .map(|(i, m)| json!({ "id": format!("ev-{i}"), "createdAt": now, "message": m }))
                .collect()
        })
        .unwrap_or_default();
    json!({ "runningCount": running, "pendingCount": (desired - running).max(0), "deployments": deployments, "events": events })
}

// ---------------------------------------------------------------- the proxy

#[derive(Clone)]
struct Proxy {
    world: Shared,
    http: reqwest::Client,
}

fn aws_error(json_protocol: bool, status: u16, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    if json_protocol {
        (
            status,
            [("content-type", "application/x-amz-json-1.1")],
            json!({ "__type": code, "message": message }).to_string(),
        )
            .into_response()
    } else {
        (
            status,
            [("content-type", "text/xml")],
            format!(
                "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>emulated</RequestId></ErrorResponse>"
            ),
        )
            .into_response()
    }
}

async fn proxy(
    State(Proxy { world, http }): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    let json_protocol = target.is_some();
    let op = match &target {
        Some(t) => t.rsplit('.').next().unwrap_or_default().to_string(),
        None => String::from_utf8_lossy(&body)
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .unwrap_or_default()
            .to_string(),
    };
    let auth = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let (fault, moto) = {
        let mut w = world.lock().unwrap();
        w.requests.push(op.clone());
        let i = w
            .faults
            .iter()
            .position(|(only, _)| only.as_deref().is_none_or(|o| o == op));
        (
            i.and_then(|i| w.faults.remove(i)).map(|(_, f)| f),
            w.moto.clone(),
        )
    };
    if auth.contains(&format!("Credential={REJECTED_KEY}/")) {
        let code = if json_protocol {
            "UnrecognizedClientException"
        } else {
            "InvalidClientTokenId"
        };
        return aws_error(
            json_protocol,
            if json_protocol { 400 } else { 403 },
            code,
            "The security token included in the request is invalid.",
        );
    }
    match fault {
        Some(Fault::Throttle) => {
            return aws_error(
                json_protocol,
                400,
                if json_protocol {
                    "ThrottlingException"
                } else {
                    "Throttling"
                },
                "Rate exceeded",
            );
        }
        Some(Fault::Unavailable) => {
            return (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response();
        }
        Some(Fault::LostAnswer(_)) | None => {}
    }
    // Tasks are the agent's: ListTasks and StopTask answer from them (a
    // stopped task's process is killed, and the agent replaces it).
    let ecs_target = target
        .as_deref()
        .is_some_and(|t| t.starts_with("AmazonEC2ContainerService"));
    if ecs_target && (op == "ListTasks" || op == "StopTask") {
        let doc: Value = serde_json::from_slice(&body).unwrap_or_default();
        let arn = |id: &str| format!("arn:aws:ecs:us-east-1:123456789012:task/{CLUSTER}/{id}");
        let mut w = world.lock().unwrap();
        let answer = if op == "ListTasks" {
            let service = doc["serviceName"].as_str().unwrap_or_default();
            let arns: Vec<String> = w
                .tasks
                .iter()
                .filter(|t| {
                    t.service == service && t.state == TaskState::Running && t.child.is_some()
                })
                .map(|t| arn(&t.id))
                .collect();
            json!({ "taskArns": arns })
        } else {
            let asked = doc["task"].as_str().unwrap_or_default().to_string();
            let id = asked.rsplit('/').next().unwrap_or_default().to_string();
            let Some(t) = w.tasks.iter_mut().find(|t| t.id == id) else {
                return aws_error(
                    true,
                    400,
                    "InvalidParameterException",
                    "The referenced task was not found.",
                );
            };
            if let Some(c) = &mut t.child {
                let _ = c.kill();
            }
            let service = t.service.clone();
            w.services.entry(service).or_default().replace_after =
                Some(Instant::now() + Duration::from_secs(2));
            w.requests.push(format!("StopTask {id}"));
            json!({ "task": { "taskArn": asked, "lastStatus": "RUNNING", "desiredStatus": "STOPPED", "stoppedReason": doc["reason"] } })
        };
        return (
            [("content-type", "application/x-amz-json-1.1")],
            answer.to_string(),
        )
            .into_response();
    }
    let lost = match fault {
        Some(Fault::LostAnswer(d)) => Some(d),
        _ => None,
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = http.request(method, format!("{moto}{path}"));
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let r = match req.body(body).send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = r.status();
    let mut out = Response::builder().status(status);
    for (k, v) in r.headers() {
        if k != "transfer-encoding" && k != "content-length" {
            out = out.header(k, v);
        }
    }
    let mut bytes = r.bytes().await.unwrap_or_default().to_vec();
    if let Some(d) = lost {
        tokio::time::sleep(d).await;
    }
    let ecs = target
        .as_deref()
        .is_some_and(|t| t.starts_with("AmazonEC2ContainerService"));
    if ecs
        && op == "DescribeServices"
        && status.is_success()
        && let Ok(mut doc) = serde_json::from_slice::<Value>(&bytes)
    {
        let w = world.lock().unwrap();
        for svc in doc["services"].as_array_mut().into_iter().flatten() {
            let name = svc["serviceName"].as_str().unwrap_or_default().to_string();
            let td = svc["taskDefinition"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let desired = svc["desiredCount"].as_i64().unwrap_or(0);
            let view = service_view(&w, &name, &td, desired);
            for (k, v) in view.as_object().unwrap() {
                svc[k] = v.clone();
            }
        }
        bytes = serde_json::to_vec(&doc).unwrap();
    }
    out.body(Body::from(bytes)).unwrap()
}

// ---------------------------------------------------------------- the ALB

#[derive(Clone)]
struct Alb {
    plane: Arc<Mutex<Plane>>,
    http: reqwest::Client,
    next: Arc<AtomicU64>,
}

/// The listener's weights and the healthy targets, from moto, ten times a second.
async fn read_plane(
    plane: Arc<Mutex<Plane>>,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    listener: String,
    groups: Vec<String>,
) {
    loop {
        if let Ok(out) = elb
            .describe_listeners()
            .listener_arns(&listener)
            .send()
            .await
        {
            let mut weights = Vec::new();
            for a in out
                .listeners()
                .first()
                .map(|l| l.default_actions())
                .unwrap_or_default()
            {
                match a
                    .forward_config()
                    .map(|f| f.target_groups())
                    .filter(|g| !g.is_empty())
                {
                    Some(groups) => {
                        for g in groups {
                            weights.push((
                                g.target_group_arn().unwrap_or_default().to_string(),
                                g.weight().unwrap_or(1),
                            ));
                        }
                    }
                    None => {
                        if let Some(arn) = a.target_group_arn() {
                            weights.push((arn.to_string(), 1));
                        }
                    }
                }
            }
            plane.lock().unwrap().weights = weights;
        }
        if let Ok(out) = elb.describe_rules().listener_arn(&listener).send().await {
            let mut rules: Vec<Rule> = out
                .rules()
                .iter()
                .filter(|r| r.is_default() != Some(true))
                .filter_map(|r| {
                    let action = r.actions().first()?;
                    let target_group =
                        action.target_group_arn().map(str::to_string).or_else(|| {
                            action
                                .forward_config()?
                                .target_groups()
                                .first()?
                                .target_group_arn()
                                .map(str::to_string)
                        })?;
                    Some(Rule {
                        priority: r.priority()?.parse().ok()?,
                        headers: r
                            .conditions()
                            .iter()
                            .filter_map(|c| {
                                let h = c.http_header_config()?;
                                Some((
                                    h.http_header_name()?.to_ascii_lowercase(),
                                    h.values().to_vec(),
                                ))
                            })
                            .collect(),
                        queries: r
                            .conditions()
                            .iter()
                            .filter_map(|c| {
                                let q = c.query_string_config()?;
                                Some(
                                    q.values()
                                        .iter()
                                        .map(|kv| {
                                            (
                                                kv.key().map(str::to_string),
                                                kv.value().unwrap_or_default().to_string(),
                                            )
                                        })
                                        .collect(),
                                )
                            })
                            .collect(),
                        target_group,
                    })
                })
                .collect();
            rules.sort_by_key(|r| r.priority);
            plane.lock().unwrap().rules = rules;
        }
        for tg in &groups {
            if let Ok(out) = elb
                .describe_target_health()
                .target_group_arn(tg)
                .send()
                .await
            {
                let ports: Vec<String> = out
                    .target_health_descriptions()
                    .iter()
                    .filter(|d| {
                        d.target_health()
                            .and_then(|h| h.state())
                            .map(|s| s.as_str())
                            == Some("healthy")
                    })
                    .filter_map(|d| {
                        let t = d.target()?;
                        Some(format!("{}:{}", t.id()?, t.port()?))
                    })
                    .collect();
                plane.lock().unwrap().targets.insert(tg.clone(), ports);
            }
        }
        plane.lock().unwrap().rounds += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ALB's per-target-group metrics, into moto's CloudWatch every second.
async fn publish_metrics(plane: Arc<Mutex<Plane>>, cw: aws_sdk_cloudwatch::Client, lb: String) {
    use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let counts = std::mem::take(&mut plane.lock().unwrap().counts);
        let now = aws_sdk_cloudwatch::primitives::DateTime::from(std::time::SystemTime::now());
        let mut data = Vec::new();
        for (tg, (requests, errors, seconds)) in counts {
            let dim = tg
                .split_once(":targetgroup/")
                .map(|(_, r)| format!("targetgroup/{r}"))
                .unwrap_or_default();
            let dims = vec![
                Dimension::builder().name("LoadBalancer").value(&lb).build(),
                Dimension::builder().name("TargetGroup").value(&dim).build(),
            ];
            for (name, value, unit) in [
                ("RequestCount", requests as f64, StandardUnit::Count),
                (
                    "HTTPCode_Target_5XX_Count",
                    errors as f64,
                    StandardUnit::Count,
                ),
                (
                    "TargetResponseTime",
                    seconds / requests.max(1) as f64,
                    StandardUnit::Seconds,
                ),
            ] {
                data.push(
                    MetricDatum::builder()
                        .metric_name(name)
                        .set_dimensions(Some(dims.clone()))
                        .timestamp(now)
                        .value(value)
                        .unit(unit)
                        .build(),
                );
            }
        }
        if !data.is_empty() {
            let _ = cw
                .put_metric_data()
                .namespace("AWS/ApplicationELB")
                .set_metric_data(Some(data))
                .send()
                .await;
        }
    }
}

/// The ALB: a weighted pick of target group, then round robin over its healthy targets.
async fn data_plane(
    State(Alb { plane, http, next }): State<Alb>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pick = {
        let p = plane.lock().unwrap();
        let by_rule = p
            .rules
            .iter()
            .find(|r| r.matches(&headers, &uri))
            .map(|r| r.target_group.clone());
        let total: i64 = p.weights.iter().map(|(_, w)| i64::from(*w)).sum();
        // xorshift over a shared state: a uniform draw per request.
        let mut x = next.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        next.store(x, Ordering::Relaxed);
        if let Some(tg) = by_rule {
            p.targets
                .get(&tg)
                .filter(|ports| !ports.is_empty())
                .map(|ports| (tg.clone(), ports[(x >> 32) as usize % ports.len()].clone()))
        } else if total <= 0 {
            None
        } else {
            let mut r = (x % total as u64) as i64;
            let tg = p
                .weights
                .iter()
                .find(|(_, w)| {
                    if r < i64::from(*w) {
                        true
                    } else {
                        r -= i64::from(*w);
                        false
                    }
                })
                .map(|(tg, _)| tg.clone());
            tg.and_then(|tg| {
                let ports = p.targets.get(&tg)?;
                (!ports.is_empty())
                    .then(|| (tg.clone(), ports[(x >> 32) as usize % ports.len()].clone()))
            })
        }
    };
    let Some((tg, addr)) = pick else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "503 Service Temporarily Unavailable",
        )
            .into_response();
    };
    let started = Instant::now();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = http.request(method, format!("http://{addr}{path}"));
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    let answer = req.body(body).send().await;
    let (status, response) = match answer {
        Ok(r) => {
            let status = r.status();
            let mut out = Response::builder().status(status);
            for (k, v) in r.headers() {
                if k != "transfer-encoding" && k != "content-length" {
                    out = out.header(k, v);
                }
            }
            out = out.header(
                "x-emulated-target-group",
                tg.rsplit('/').nth(1).unwrap_or_default(),
            );
            (
                status,
                out.body(Body::from(r.bytes().await.unwrap_or_default()))
                    .unwrap(),
            )
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        ),
    };
    let mut p = plane.lock().unwrap();
    let c = p.counts.entry(tg).or_default();
    c.0 += 1;
    if status.is_server_error() {
        c.1 += 1;
    }
    c.2 += started.elapsed().as_secs_f64();
    response
}
