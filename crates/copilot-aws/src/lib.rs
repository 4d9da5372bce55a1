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
        return Err(no_credentials(&DisplayErrorContext(&e).to_string()));
    }
    Ok(conf)
}

fn no_credentials(why: &str) -> ProviderError {
    ProviderError::new(
        ErrorKind::Unauthorised,
        "find AWS credentials",
        format!("the standard credentials chain gave none: {why}"),
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
