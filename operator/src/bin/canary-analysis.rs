//! canary-analysis: run one canary analysis of a ModelDeployment against a real Prometheus and
//! tracking server, outside Kubernetes, and print the decision as JSON (what the operator would
//! do next). The e2e run drives the analysis through it; it also helps to try a `rollout`
//! section against live numbers before applying it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use mlkube_operator::crd::ModelDeployment;
use mlkube_operator::crd::rollout::{RolloutPhase, RolloutStatus};
use mlkube_operator::registry::{Credentials, Endpoint, HttpRegistry};
use mlkube_operator::rollout::measure::{HttpMeasurements, MeasurementSource};
use mlkube_operator::rollout::{self, CanaryParams};

/// Judge a canary once: read Prometheus and the quality API for the stable and canary versions
/// and print the verdict, the numbers and the next step as JSON.
#[derive(Debug, Parser)]
#[command(name = "canary-analysis", version)]
struct Args {
    /// A ModelDeployment YAML file with `spec.rollout.strategy: Canary`.
    #[arg(long, env = "MLKUBE_MODEL_DEPLOYMENT")]
    model_deployment: PathBuf,
    /// Prometheus that scrapes the sidecars.
    #[arg(long, env = "MLKUBE_PROMETHEUS_URL")]
    prometheus_url: String,
    /// The tracking server (quality API).
    #[arg(long, env = "MLKUBE_TRACKING_URI")]
    tracking_uri: String,
    /// Basic-auth user of the tracking server.
    #[arg(long, env = "MLFLOW_TRACKING_USERNAME")]
    username: Option<String>,
    /// Basic-auth password of the tracking server.
    #[arg(long, env = "MLFLOW_TRACKING_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Namespace label of the series. Default: the ModelDeployment's namespace.
    #[arg(long, env = "MLKUBE_NAMESPACE")]
    namespace: Option<String>,
    /// The registered model. Default: the ModelDeployment's `spec.model.name`.
    #[arg(long, env = "MLKUBE_MODEL_NAME")]
    model_name: Option<String>,
    /// The stable version.
    #[arg(long, env = "MLKUBE_STABLE_VERSION")]
    stable: String,
    /// The canary version.
    #[arg(long, env = "MLKUBE_CANARY_VERSION")]
    canary: String,
    /// Index of the canary's current step.
    #[arg(long, env = "MLKUBE_CANARY_STEP", default_value_t = 0)]
    step: i32,
    /// Seconds since the canary (and its current step) started.
    #[arg(long, env = "MLKUBE_CANARY_AGE", default_value_t = 3600)]
    canary_age: i64,
    /// Failed analyses in a row so far.
    #[arg(long, env = "MLKUBE_FAILED_ANALYSES", default_value_t = 0)]
    failed_analyses: i32,
    /// Timeout of one HTTP request, in seconds.
    #[arg(long, env = "MLKUBE_REGISTRY_TIMEOUT", default_value_t = 10)]
    timeout: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args {
        model_deployment,
        prometheus_url,
        tracking_uri,
        username,
        password,
        namespace,
        model_name,
        stable,
        canary,
        step,
        canary_age,
        failed_analyses,
        timeout,
    } = Args::parse();
    let text = std::fs::read_to_string(&model_deployment)?;
    let md: ModelDeployment = serde_saphyr::from_str(&text)?;
    let params = CanaryParams::from_spec(md.spec.rollout.as_ref())?.ok_or_else(|| {
        anyhow::anyhow!(
            "{}: spec.rollout.strategy is not Canary",
            model_deployment.display()
        )
    })?;
    let namespace = namespace
        .or_else(|| md.metadata.namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    let model_name = model_name.unwrap_or_else(|| md.spec.model.name.clone());
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let started = Time(now.0 - k8s_openapi::jiff::SignedDuration::from_secs(canary_age));
    let weight = usize::try_from(step)
        .ok()
        .and_then(|i| params.steps.get(i))
        .map_or(0, |s| s.weight);
    let state = RolloutStatus {
        phase: RolloutPhase::Canary,
        stable_version: Some(stable.clone()),
        canary_version: Some(canary.clone()),
        current_weight: weight,
        current_step: Some(step),
        canary_started_at: Some(started.clone()),
        step_started_at: Some(started),
        failed_analyses,
        ..Default::default()
    };
    let query = rollout::snapshot_query(&params, &namespace, &model_name, &stable, &canary, &now);
    let http = Arc::new(HttpRegistry::new(Duration::from_secs(timeout))?);
    let credentials = match (username, password) {
        (Some(username), Some(password)) => Some(Credentials { username, password }),
        _ => None,
    };
    let endpoint = Endpoint::new(&tracking_uri).with_credentials(credentials.as_ref());
    let snapshot = HttpMeasurements::new(http, prometheus_url)
        .snapshot(&endpoint, &query)
        .await;
    let next = rollout::analyze(&params, &state, &snapshot, &now);
    let (after, transition) = rollout::advance(&state, &next, &now);
    let out = serde_json::json!({
        "step": next.step.as_str(),
        "transition": transition.map(|t| t.reason()),
        "verdict": next.verdict,
        "rollout": after,
        "queries": {
            "canaryRequests": query.canary_requests,
            "canaryErrors": query.canary_errors,
            "canaryP99": query.canary_p99,
            "stableP99": query.stable_p99,
            "qualityEndTime": query.quality.as_ref().map(|q| q.end_time_ms),
        },
    });
    // The decision is this program's output.
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &out)?;
    std::io::Write::write_all(&mut stdout, b"\n")?;
    Ok(())
}
