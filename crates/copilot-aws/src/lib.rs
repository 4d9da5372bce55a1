//! What every AWS client of copilot shares: the SDK configuration from the
//! standard chain, and AWS's errors said as provider errors.
//!
//! Credentials and region come from the standard chain (environment,
//! profile, SSO, web identity, container and instance metadata) through
//! `aws-config`; `AWS_ENDPOINT_URL` and `AWS_ENDPOINT_URL_<SERVICE>` point
//! the clients elsewhere (the tests reach moto that way). The SDK retries
//! throttling, 5xx and connection errors itself (standard mode, backoff with
//! jitter); copilot bounds each attempt by `COPILOT_PROVIDER_REQUEST_TIMEOUT`.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ecs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use copilot_core::http::RetryPolicy;
use copilot_core::provider::{ErrorKind, ProviderError};

/// How many times the SDK tries a call (the first try included).
const ATTEMPTS: u32 = 5;

/// The SDK configuration for `region` (else the chain's region), with
/// credentials checked once, so a missing or broken chain is said before
/// anything is asked of AWS.
pub async fn config(region: Option<&str>) -> Result<SdkConfig, ProviderError> {
    let attempt = RetryPolicy::from_env().request_timeout;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(ATTEMPTS))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(attempt)
                .build(),
        );
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_string()));
    }
    let sources = credential_sources(&|k| std::env::var_os(k), on_ec2());
    if sources.is_empty() {
        // The chain would end at the instance metadata service, which off
        // EC2 answers nothing (or a proxy's refusal) after its timeouts.
        return Err(no_credentials(
            "none of AWS_ACCESS_KEY_ID, AWS_PROFILE, a shared config or credentials file, \
             web identity or container credentials is set, and this is not an EC2 instance",
        ));
    }
    let conf = loader.load().await;
    if conf.region().is_none() {
        return Err(
            ProviderError::unavailable("configure AWS", "no AWS region is set")
                .with_hint("set `region:` in the arena's provider section, or AWS_REGION"),
        );
    }
    use aws_sdk_ecs::config::ProvideCredentials as _;
    let Some(creds) = conf.credentials_provider() else {
        return Err(no_credentials("no credentials provider is configured"));
    };
    if let Err(e) = creds.provide_credentials().await {
        return Err(no_credentials(&format!(
            "{} gave none: {}",
            sources.join(", "),
            causes(&e)
        )));
    }
    Ok(conf)
}

/// Where the standard chain could find credentials here, by what is set:
/// the environment's keys, a profile or the shared files, web identity,
/// container credentials, and the instance metadata service on EC2.
fn credential_sources(
    var: &dyn Fn(&str) -> Option<std::ffi::OsString>,
    on_ec2: bool,
) -> Vec<&'static str> {
    let set = |k: &str| var(k).is_some_and(|v| !v.is_empty());
    let home = var("HOME").map(std::path::PathBuf::from);
    let file = |env: &str, name: &str| match var(env) {
        Some(p) if !p.is_empty() => std::path::Path::new(&p).is_file(),
        _ => home
            .as_ref()
            .is_some_and(|h| h.join(".aws").join(name).is_file()),
    };
    let mut sources = Vec::new();
    if set("AWS_ACCESS_KEY_ID") {
        sources.push("the environment's keys");
    }
    if set("AWS_PROFILE") || file("AWS_CONFIG_FILE", "config") {
        sources.push("the shared config");
    }
    if file("AWS_SHARED_CREDENTIALS_FILE", "credentials") {
        sources.push("the shared credentials file");
    }
    if set("AWS_WEB_IDENTITY_TOKEN_FILE") {
        sources.push("web identity");
    }
    if set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") || set("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        sources.push("container credentials");
    }
    let imds_off = var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !imds_off && (on_ec2 || set("AWS_EC2_METADATA_SERVICE_ENDPOINT")) {
        sources.push("the instance metadata service");
    }
    sources
}

/// Whether this machine is an EC2 instance, by what its firmware says (Nitro
/// and Xen instances alike), so the metadata service is only asked there.
fn on_ec2() -> bool {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    read("/sys/devices/virtual/dmi/id/sys_vendor").trim() == "Amazon EC2"
        || read("/sys/devices/virtual/dmi/id/board_asset_tag").starts_with("i-")
        || read("/sys/hypervisor/uuid").starts_with("ec2")
}

/// An error and its causes on one line, without the SDK's debug structures.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let said = s.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = s.source();
    }
    text
}

fn no_credentials(why: &str) -> ProviderError {
    ProviderError::new(
        ErrorKind::Unauthorised,
        "find AWS credentials",
        format!("no AWS credentials: {why}"),
    )
    .with_hint(
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE (with `aws sso login`), \
         or run where a role is attached (web identity, ECS task role, instance profile)",
    )
}

/// Error codes AWS answers when the credentials are wrong or not allowed.
const REJECTED: &[&str] = &[
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "ExpiredToken",
    "AccessDeniedException",
    "AccessDenied",
    "AuthFailure",
    "UnauthorizedOperation",
];

const THROTTLED: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "RequestLimitExceeded",
];

/// An AWS call that failed, said as what copilot does next depends on.
pub fn error<E, R>(action: impl Into<String>, e: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let action = action.into();
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("Unknown");
            let message = err.message().unwrap_or("no message").to_string();
            let said = format!("{code}: {message}");
            if REJECTED.contains(&code) {
                ProviderError::new(ErrorKind::Unauthorised, action, said).with_hint(
                    "AWS refused the credentials or their permissions: check the key, \
                     the session token's expiry, and the role's policy for this call",
                )
            } else if THROTTLED.contains(&code) {
                ProviderError::new(
                    ErrorKind::Throttled {
                        retry_after_ms: None,
                    },
                    action,
                    format!("{said} (after {ATTEMPTS} tries)"),
                )
            } else if code.ends_with("NotFoundException")
                || code.ends_with("NotFound")
                || code == "ResourceNotFound"
            {
                ProviderError::new(ErrorKind::NotFound, action, said)
            } else if code.starts_with("ServiceUnavailable")
                || code.starts_with("InternalFailure")
                || code == "ServerException"
            {
                ProviderError::new(
                    ErrorKind::Retryable,
                    action,
                    format!("{said} (after {ATTEMPTS} tries)"),
                )
            } else {
                ProviderError::failed(action, said)
            }
        }
        SdkError::TimeoutError(_) => ProviderError::new(
            ErrorKind::Retryable,
            action,
            "AWS did not answer in time".to_string(),
        ),
        other => {
            let text = DisplayErrorContext(other).to_string();
            if text.contains("credentials") {
                no_credentials(&text).during(action)
            } else {
                ProviderError::new(ErrorKind::Retryable, action, text)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::ffi::OsString;

    fn sources(vars: &[(&str, &str)], on_ec2: bool) -> Vec<&'static str> {
        let vars: BTreeMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        credential_sources(&|k| vars.get(k).cloned(), on_ec2)
    }

    #[test]
    fn the_metadata_service_is_asked_only_on_ec2_or_when_named() {
        let nowhere = [("HOME", "/nonexistent")];
        assert!(sources(&nowhere, false).is_empty());
        assert_eq!(sources(&nowhere, true), ["the instance metadata service"]);
        assert!(
            sources(
                &[
                    ("HOME", "/nonexistent"),
                    ("AWS_EC2_METADATA_DISABLED", "true")
                ],
                true
            )
            .is_empty()
        );
        assert_eq!(
            sources(
                &[
                    ("HOME", "/nonexistent"),
                    ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                    (
                        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                        "/v2/credentials/x"
                    ),
                ],
                false
            ),
            ["the environment's keys", "container credentials"]
        );
    }

    #[test]
    fn shared_files_count_where_they_exist() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path().to_str().unwrap();
        assert!(sources(&[("HOME", h)], false).is_empty());
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(home.path().join(".aws/credentials"), "[default]\n").unwrap();
        assert_eq!(
            sources(&[("HOME", h)], false),
            ["the shared credentials file"]
        );
        assert_eq!(
            sources(&[("HOME", h), ("AWS_PROFILE", "prod")], false),
            ["the shared config", "the shared credentials file"]
        );
    }
}
