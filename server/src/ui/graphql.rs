//! `POST /graphql`: the GraphQL endpoint MLflow 3's experiment and run pages query (the run page has
//! no REST fallback). The schema is upstream's (`server/src/ui/schema.graphql` is our copy of its
//! printed SDL; a test keeps the two equal), built with async-graphql.
//!
//! Every root field and every nested field that reads more data (a run's experiment and model
//! versions) is answered by calling this server's own REST API in-process, with the caller's
//! credentials. So GraphQL answers exactly what REST answers, and with basic auth on each
//! operation is authorised by the same permission table as its REST twin (docs/web-ui.md).
//!
//! Wire rules that matter to the UI's Apollo client: always HTTP 200 with `{"data", "errors"}`
//! (errors as a list of messages, as upstream sends them); `__typename` on request; int64 values
//! as strings (`LongString`); NaN and infinite metric values as `null`.

use std::sync::Arc;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, Selection, SelectionSet};
use async_graphql::registry::{MetaDirective, MetaInputValue, Registry};
use async_graphql::{
    ComplexObject, Context, CustomDirective, CustomDirectiveFactory, EmptySubscription, Enum,
    ErrorExtensions, InputObject, InputValueError, InputValueResult, Object, Scalar, ScalarType, Schema,
    ServerResult, SimpleObject, Value as GqlValue,
};
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::error::{ApiError, ErrorCode};

/// Upstream's limits on one query (MLflow's defaults): nesting depth, root fields, aliases in one
/// selection set, and selections in all.
const MAX_DEPTH: usize = 10;
const MAX_ROOT_FIELDS: usize = 10;
const MAX_ALIASES: usize = 10;
const MAX_SELECTIONS: usize = 1000;
/// Longest query text: the UI's largest query is a few KB, and parsing costs time in proportion.
const MAX_QUERY_BYTES: usize = 64 * 1024;

/// The schema with its in-process REST backend.
pub type MlflowSchema = Schema<Query, Mutation, EmptySubscription>;

/// The REST API (already behind basic auth when that is on) that resolvers call.
#[derive(Clone)]
pub struct Backend {
    api: Router,
}

/// Who asked: their `Authorization` header travels with every in-process call.
#[derive(Clone, Default)]
struct Caller {
    authorization: Option<HeaderValue>,
}

/// Build the schema over `api`, the REST routes under `/ajax-api/2.0`.
pub fn schema(api: Router) -> MlflowSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .data(Backend { api })
        .directive(ComponentDirective)
        .limit_depth(MAX_DEPTH)
        .finish()
}

/// `GET|POST /graphql`.
pub fn router<S: Clone + Send + Sync + 'static>(schema: MlflowSchema) -> Router<S> {
    Router::new().route(
        "/graphql",
        get(graphql_get).post(graphql_post).with_state(Arc::new(schema)),
    )
}

#[derive(Debug, Deserialize)]
struct GraphQlRequest {
    query: Option<String>,
    #[serde(default)]
    variables: Option<Value>,
    #[serde(default, rename = "operationName")]
    operation_name: Option<String>,
}

async fn graphql_post(
    State(schema): State<Arc<MlflowSchema>>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(err) => return crate::wire::body_rejection(err).into_response(),
    };
    match serde_json::from_slice::<GraphQlRequest>(&body) {
        Ok(request) => execute(&schema, &headers, request).await,
        Err(err) => {
            ApiError::invalid(format!("The GraphQL request is not valid JSON: {err}")).into_response()
        }
    }
}

async fn graphql_get(
    State(schema): State<Arc<MlflowSchema>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut request = GraphQlRequest {
        query: None,
        variables: None,
        operation_name: None,
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "query" => request.query = Some(value.into_owned()),
            "operationName" => request.operation_name = Some(value.into_owned()),
            "variables" => match serde_json::from_str(&value) {
                Ok(v) => request.variables = Some(v),
                Err(err) => {
                    return ApiError::invalid(format!("GraphQL variables are not valid JSON: {err}"))
                        .into_response();
                }
            },
            _ => {}
        }
    }
    execute(&schema, &headers, request).await
}

async fn execute(schema: &MlflowSchema, headers: &HeaderMap, request: GraphQlRequest) -> Response {
    let Some(query) = request.query.filter(|q| !q.trim().is_empty()) else {
        return ApiError::missing("query").into_response();
    };
    if let Err(message) = check_query_safety(&query) {
        return answer(Value::Null, vec![message]);
    }
    let mut gql = async_graphql::Request::new(query).data(Caller {
        authorization: headers.get(header::AUTHORIZATION).cloned(),
    });
    if let Some(variables) = request.variables.filter(|v| !v.is_null()) {
        gql = gql.variables(async_graphql::Variables::from_json(variables));
    }
    if let Some(name) = request.operation_name.filter(|n| !n.is_empty()) {
        gql = gql.operation_name(name);
    }
    let response = schema.execute(gql).await;
    let data = response.data.into_json().unwrap_or(Value::Null);
    answer(data, response.errors.into_iter().map(|e| e.message).collect())
}

/// MLflow's GraphQL answer: always 200, errors as a list of messages or `null`.
fn answer(data: Value, errors: Vec<String>) -> Response {
    let errors = if errors.is_empty() {
        Value::Null
    } else {
        json!(errors)
    };
    (
        StatusCode::OK,
        axum::Json(json!({ "data": data, "errors": errors })),
    )
        .into_response()
}

/// Refuse queries past upstream's limits before executing them (depth is left to the schema's
/// own limit). A query that does not parse is left to the executor, which reports it. The walks
/// stop as soon as a limit is passed, and fragment spreads count as selections, so fragments that
/// spread each other many times over cannot make the count itself take exponential time.
fn check_query_safety(query: &str) -> Result<(), String> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "GraphQL queries should be at most {MAX_QUERY_BYTES} bytes, got {} bytes.",
            query.len()
        ));
    }
    let Ok(doc) = async_graphql::parser::parse_query(query) else {
        return Ok(());
    };
    let mut root_fields = 0;
    let mut selections = 0;
    let operations: Vec<&SelectionSet> = match &doc.operations {
        DocumentOperations::Single(op) => vec![&op.node.selection_set.node],
        DocumentOperations::Multiple(ops) => ops.values().map(|op| &op.node.selection_set.node).collect(),
    };
    let mut aliases_max = 0;
    for set in operations {
        root_fields += count_fields(&doc, set, 0);
        if root_fields > MAX_ROOT_FIELDS {
            break;
        }
        walk(&doc, set, 0, &mut selections, &mut aliases_max);
    }
    if root_fields > MAX_ROOT_FIELDS {
        return Err(format!(
            "GraphQL queries should have at most {MAX_ROOT_FIELDS} root fields, got {root_fields} root fields."
        ));
    }
    if aliases_max > MAX_ALIASES {
        return Err(format!(
            "GraphQL queries should have at most {MAX_ALIASES} aliases, got {aliases_max} aliases."
        ));
    }
    if selections > MAX_SELECTIONS {
        return Err(format!(
            "Query exceeds maximum total selections of {MAX_SELECTIONS}"
        ));
    }
    Ok(())
}

/// Fields directly in `set`, counting through fragments (bounded by `guard` against cycles), up to
/// just past [`MAX_ROOT_FIELDS`]: counting stops there.
fn count_fields(doc: &ExecutableDocument, set: &SelectionSet, guard: usize) -> usize {
    if guard > MAX_DEPTH {
        return 0;
    }
    let mut count = 0;
    for item in &set.items {
        count += match &item.node {
            Selection::Field(_) => 1,
            Selection::InlineFragment(f) => count_fields(doc, &f.node.selection_set.node, guard + 1),
            Selection::FragmentSpread(s) => doc
                .fragments
                .get(&s.node.fragment_name.node)
                .map_or(0, |f| count_fields(doc, &f.node.selection_set.node, guard + 1)),
        };
        if count > MAX_ROOT_FIELDS {
            break;
        }
    }
    count
}

fn walk(
    doc: &ExecutableDocument,
    set: &SelectionSet,
    depth: usize,
    selections: &mut usize,
    aliases_max: &mut usize,
) {
    if depth > MAX_DEPTH || *selections > MAX_SELECTIONS {
        return;
    }
    let mut aliases = 0;
    for item in &set.items {
        *selections += 1;
        if *selections > MAX_SELECTIONS {
            break;
        }
        match &item.node {
            Selection::Field(field) => {
                if field.node.alias.is_some() {
                    aliases += 1;
                }
                walk(
                    doc,
                    &field.node.selection_set.node,
                    depth + 1,
                    selections,
                    aliases_max,
                );
            }
            Selection::InlineFragment(f) => walk(
                doc,
                &f.node.selection_set.node,
                depth + 1,
                selections,
                aliases_max,
            ),
            Selection::FragmentSpread(s) => {
                if let Some(f) = doc.fragments.get(&s.node.fragment_name.node) {
                    walk(
                        doc,
                        &f.node.selection_set.node,
                        depth + 1,
                        selections,
                        aliases_max,
                    );
                }
            }
        }
    }
    *aliases_max = (*aliases_max).max(aliases);
}

/// `@component(name: String!) on QUERY | MUTATION`: the UI tags its operations with the page that
/// sends them; it changes nothing, but a strict engine rejects an undeclared directive.
struct ComponentDirective;

struct NoOpDirective;

impl CustomDirective for NoOpDirective {}

impl CustomDirectiveFactory for ComponentDirective {
    fn name(&self) -> std::borrow::Cow<'static, str> {
        "component".into()
    }

    fn register(&self, registry: &mut Registry) {
        let mut args = async_graphql::indexmap::IndexMap::new();
        args.insert(
            "name".to_owned(),
            MetaInputValue {
                name: "name".to_owned(),
                description: None,
                ty: "String!".to_owned(),
                deprecation: Default::default(),
                default_value: None,
                visible: None,
                inaccessible: false,
                tags: Vec::new(),
                is_secret: false,
                directive_invocations: Vec::new(),
            },
        );
        registry.add_directive(MetaDirective {
            name: "component".to_owned(),
            description: None,
            locations: vec![
                async_graphql::registry::__DirectiveLocation::QUERY,
                async_graphql::registry::__DirectiveLocation::MUTATION,
            ],
            args,
            is_repeatable: false,
            visible: None,
            composable: None,
        });
    }

    fn create(
        &self,
        _ctx: &async_graphql::ContextDirective<'_>,
        _directive: &async_graphql::parser::types::Directive,
    ) -> ServerResult<Box<dyn CustomDirective>> {
        Ok(Box::new(NoOpDirective))
    }
}

// ---------------------------------------------------------------------------------------------
// Calling the REST API in-process.

impl Backend {
    async fn call(
        &self,
        ctx: &Context<'_>,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> async_graphql::Result<Value> {
        let caller = ctx.data_opt::<Caller>().cloned().unwrap_or_default();
        let mut request = Request::builder().method(method).uri(path_and_query);
        if let Some(auth) = caller.authorization {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let body = match body {
            Some(v) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let request = request
            .body(body)
            .map_err(|e| async_graphql::Error::new(e.to_string()))?;
        let response = self
            .api
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| async_graphql::Error::new(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| async_graphql::Error::new(e.to_string()))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(value)
        } else {
            let message = value
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("request failed with HTTP {}", status.as_u16()));
            let code = value
                .get("error_code")
                .and_then(Value::as_str)
                .unwrap_or(ErrorCode::InternalError.as_str())
                .to_owned();
            Err(async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code)))
        }
    }

    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        ctx: &Context<'_>,
        path: &str,
        params: &[(&str, String)],
    ) -> async_graphql::Result<T> {
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (key, value) in params {
                query.append_pair(key, value);
            }
            query.finish()
        };
        let uri = if query.is_empty() {
            format!("{API}{path}")
        } else {
            format!("{API}{path}?{query}")
        };
        let value = self.call(ctx, Method::GET, &uri, None).await?;
        decode(value)
    }

    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        ctx: &Context<'_>,
        path: &str,
        body: Value,
    ) -> async_graphql::Result<T> {
        let value = self
            .call(ctx, Method::POST, &format!("{API}{path}"), Some(body))
            .await?;
        decode(value)
    }
}

const API: &str = "/ajax-api/2.0/mlflow";

fn decode<T: for<'de> Deserialize<'de>>(value: Value) -> async_graphql::Result<T> {
    serde_json::from_value(value)
        .map_err(|e| async_graphql::Error::new(format!("unexpected response shape: {e}")))
}

fn backend<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Backend> {
    ctx.data::<Backend>()
}

/// A failed read becomes `null` in `data` with its message in `errors`, as GraphQL asks of a
/// nullable field (and as upstream answers).
fn soft<T>(ctx: &Context<'_>, result: async_graphql::Result<T>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err) => {
            ctx.add_error(err.into_server_error(ctx.item.pos));
            None
        }
    }
}

/// A REST GET on the caller's behalf; a failure becomes `null` plus an error (see [`soft`]).
async fn rest_get<T: for<'de> Deserialize<'de>>(
    ctx: &Context<'_>,
    path: &str,
    params: &[(&str, String)],
) -> Option<T> {
    let result = match backend(ctx) {
        Ok(api) => api.get(ctx, path, params).await,
        Err(err) => Err(err),
    };
    soft(ctx, result)
}

/// A REST POST with a JSON body on the caller's behalf, like [`rest_get`].
async fn rest_post<T: for<'de> Deserialize<'de>>(ctx: &Context<'_>, path: &str, body: Value) -> Option<T> {
    let result = match backend(ctx) {
        Ok(api) => api.post(ctx, path, body).await,
        Err(err) => Err(err),
    };
    soft(ctx, result)
}

/// `[String]` arguments without their nulls.
fn strings(list: &Option<Vec<Option<String>>>) -> Vec<String> {
    list.iter().flatten().flatten().cloned().collect()
}

fn push_opt(params: &mut Vec<(&'static str, String)>, key: &'static str, value: Option<impl ToString>) {
    if let Some(v) = value {
        params.push((key, v.to_string()));
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars and helpers for MLflow's JSON.

/// int64 as a string, so JavaScript does not round it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LongString(pub String);

/// LongString Scalar type to prevent truncation to max integer in JavaScript.
#[Scalar(name = "LongString")]
impl ScalarType for LongString {
    fn parse(value: GqlValue) -> InputValueResult<Self> {
        match value {
            GqlValue::String(s) => Ok(Self(s)),
            GqlValue::Number(n) => Ok(Self(n.to_string())),
            other => Err(InputValueError::expected_type(other)),
        }
    }

    fn to_value(&self) -> GqlValue {
        GqlValue::String(self.0.clone())
    }
}

impl<'de> Deserialize<'de> for LongString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Self(s)),
            Value::Number(n) => Ok(Self(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected an int64, got {other}"
            ))),
        }
    }
}

/// A metric value: MLflow's JSON writes NaN and infinities as strings; GraphQL's Float cannot
/// hold them, so they become `null` (as upstream does for NaN).
fn finite<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => n.as_f64().filter(|v| v.is_finite()),
        _ => None,
    })
}

/// Missing repeated fields are empty lists, as MLflow's protobuf-backed schema returns them.
fn list<T>() -> Option<Vec<T>> {
    Some(Vec::new())
}

// ---------------------------------------------------------------------------------------------
// Types (names and fields as upstream's schema prints them).

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[graphql(name = "ApiError")]
#[serde(default)]
pub struct GqlApiError {
    code: Option<String>,
    message: Option<String>,
    help_url: Option<String>,
    trace_id: Option<String>,
    error_details: Option<Vec<Option<ErrorDetail>>>,
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct ErrorDetail {
    field: Option<String>,
    message: Option<String>,
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowExperimentTag {
    key: Option<String>,
    value: Option<String>,
}

#[derive(SimpleObject, Deserialize, Clone)]
#[serde(default)]
pub struct MlflowExperiment {
    experiment_id: Option<String>,
    name: Option<String>,
    artifact_location: Option<String>,
    lifecycle_stage: Option<String>,
    last_update_time: Option<LongString>,
    creation_time: Option<LongString>,
    tags: Option<Vec<MlflowExperimentTag>>,
    effective_trace_archival_retention: Option<String>,
    workspace: Option<String>,
}

impl Default for MlflowExperiment {
    fn default() -> Self {
        Self {
            experiment_id: None,
            name: None,
            artifact_location: None,
            lifecycle_stage: None,
            last_update_time: None,
            creation_time: None,
            tags: list(),
            effective_trace_archival_retention: None,
            workspace: None,
        }
    }
}

#[derive(SimpleObject, Deserialize, Default)]
#[serde(default)]
pub struct MlflowGetExperimentResponse {
    experiment: Option<MlflowExperiment>,
    api_error: Option<GqlApiError>,
}

#[derive(InputObject)]
pub struct MlflowGetExperimentInput {
    experiment_id: Option<String>,
}

#[derive(SimpleObject, Deserialize, Default)]
#[serde(default)]
pub struct MlflowMetricWithRunId {
    key: Option<String>,
    #[serde(deserialize_with = "finite")]
    value: Option<f64>,
    timestamp: Option<LongString>,
    step: Option<LongString>,
    run_id: Option<String>,
}

#[derive(SimpleObject, Deserialize)]
#[serde(default)]
pub struct MlflowGetMetricHistoryBulkIntervalResponse {
    metrics: Option<Vec<MlflowMetricWithRunId>>,
    api_error: Option<GqlApiError>,
}

impl Default for MlflowGetMetricHistoryBulkIntervalResponse {
    fn default() -> Self {
        Self {
            metrics: list(),
            api_error: None,
        }
    }
}

#[derive(InputObject)]
pub struct MlflowGetMetricHistoryBulkIntervalInput {
    run_ids: Option<Vec<Option<String>>>,
    metric_key: Option<String>,
    start_step: Option<i32>,
    end_step: Option<i32>,
    max_results: Option<i32>,
}

#[derive(Enum, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MlflowRunStatus {
    Running,
    Scheduled,
    Finished,
    Failed,
    Killed,
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowRunInfo {
    run_id: Option<String>,
    run_uuid: Option<String>,
    run_name: Option<String>,
    experiment_id: Option<String>,
    user_id: Option<String>,
    status: Option<MlflowRunStatus>,
    start_time: Option<LongString>,
    end_time: Option<LongString>,
    artifact_uri: Option<String>,
    lifecycle_stage: Option<String>,
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowMetricExtension {
    key: Option<String>,
    #[serde(deserialize_with = "finite")]
    value: Option<f64>,
    timestamp: Option<LongString>,
    step: Option<LongString>,
    dataset_name: Option<String>,
    dataset_digest: Option<String>,
    model_id: Option<String>,
    run_id: Option<String>,
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowParam {
    key: Option<String>,
    value: Option<String>,
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowRunTag {
    key: Option<String>,
    value: Option<String>,
}

#[derive(SimpleObject, Deserialize, Clone)]
#[serde(default)]
pub struct MlflowRunData {
    metrics: Option<Vec<MlflowMetricExtension>>,
    params: Option<Vec<MlflowParam>>,
    tags: Option<Vec<MlflowRunTag>>,
}

impl Default for MlflowRunData {
    fn default() -> Self {
        Self {
            metrics: list(),
            params: list(),
            tags: list(),
        }
    }
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowInputTag {
    key: Option<String>,
    value: Option<String>,
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowDataset {
    name: Option<String>,
    digest: Option<String>,
    source_type: Option<String>,
    source: Option<String>,
    schema: Option<String>,
    profile: Option<String>,
}

#[derive(SimpleObject, Deserialize, Clone)]
#[serde(default)]
pub struct MlflowDatasetInput {
    tags: Option<Vec<MlflowInputTag>>,
    dataset: Option<MlflowDataset>,
}

impl Default for MlflowDatasetInput {
    fn default() -> Self {
        Self {
            tags: list(),
            dataset: None,
        }
    }
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowModelInput {
    model_id: Option<String>,
}

#[derive(SimpleObject, Deserialize, Clone)]
#[serde(default)]
pub struct MlflowRunInputs {
    dataset_inputs: Option<Vec<MlflowDatasetInput>>,
    model_inputs: Option<Vec<MlflowModelInput>>,
}

impl Default for MlflowRunInputs {
    fn default() -> Self {
        Self {
            dataset_inputs: list(),
            model_inputs: list(),
        }
    }
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowModelOutput {
    model_id: Option<String>,
    step: Option<LongString>,
}

#[derive(SimpleObject, Deserialize, Clone)]
#[serde(default)]
pub struct MlflowRunOutputs {
    model_outputs: Option<Vec<MlflowModelOutput>>,
}

impl Default for MlflowRunOutputs {
    fn default() -> Self {
        Self {
            model_outputs: list(),
        }
    }
}

/// A run, plus its experiment and the model versions registered from it.
#[derive(SimpleObject, Deserialize, Default, Clone)]
#[graphql(complex)]
#[serde(default)]
pub struct MlflowRunExtension {
    info: Option<MlflowRunInfo>,
    data: Option<MlflowRunData>,
    inputs: Option<MlflowRunInputs>,
    outputs: Option<MlflowRunOutputs>,
}

#[ComplexObject]
impl MlflowRunExtension {
    async fn experiment(&self, ctx: &Context<'_>) -> Option<MlflowExperiment> {
        let id = self.info.as_ref().and_then(|i| i.experiment_id.clone())?;
        let response: Option<MlflowGetExperimentResponse> =
            rest_get(ctx, "/experiments/get", &[("experiment_id", id)]).await;
        response?.experiment
    }

    async fn model_versions(&self, ctx: &Context<'_>) -> Option<Vec<MlflowModelVersion>> {
        let Some(run_id) = self
            .info
            .as_ref()
            .and_then(|i| i.run_id.clone().or_else(|| i.run_uuid.clone()))
        else {
            return list();
        };
        let filter = format!("run_id='{}'", run_id.replace('\'', "\\'"));
        let response: Option<MlflowSearchModelVersionsResponse> =
            rest_get(ctx, "/model-versions/search", &[("filter", filter)]).await;
        response?.model_versions
    }
}

#[derive(SimpleObject, Deserialize, Default)]
#[serde(default)]
pub struct MlflowGetRunResponse {
    run: Option<MlflowRunExtension>,
    api_error: Option<GqlApiError>,
}

#[derive(InputObject)]
pub struct MlflowGetRunInput {
    run_id: Option<String>,
    run_uuid: Option<String>,
}

#[derive(Enum, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MlflowModelVersionStatus {
    PendingRegistration,
    FailedRegistration,
    Ready,
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowModelVersionTag {
    key: Option<String>,
    value: Option<String>,
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowModelParam {
    name: Option<String>,
    value: Option<String>,
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowModelMetric {
    key: Option<String>,
    #[serde(deserialize_with = "finite")]
    value: Option<f64>,
    timestamp: Option<LongString>,
    step: Option<LongString>,
    dataset_name: Option<String>,
    dataset_digest: Option<String>,
    model_id: Option<String>,
    run_id: Option<String>,
}

#[derive(Enum, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MlflowDeploymentJobConnectionState {
    DeploymentJobConnectionStateUnspecified,
    NotSetUp,
    Connected,
    NotFound,
    RequiredParametersChanged,
}

#[derive(Enum, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MlflowModelVersionDeploymentJobStateDeploymentJobRunState {
    DeploymentJobRunStateUnspecified,
    NoValidDeploymentJobFound,
    Running,
    Succeeded,
    Failed,
    Pending,
    Approval,
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowModelVersionDeploymentJobState {
    job_id: Option<String>,
    run_id: Option<String>,
    job_state: Option<MlflowDeploymentJobConnectionState>,
    run_state: Option<MlflowModelVersionDeploymentJobStateDeploymentJobRunState>,
    current_task_name: Option<String>,
}

#[derive(SimpleObject, Deserialize, Clone)]
#[serde(default)]
pub struct MlflowModelVersion {
    name: Option<String>,
    version: Option<String>,
    creation_timestamp: Option<LongString>,
    last_updated_timestamp: Option<LongString>,
    user_id: Option<String>,
    current_stage: Option<String>,
    description: Option<String>,
    source: Option<String>,
    run_id: Option<String>,
    status: Option<MlflowModelVersionStatus>,
    status_message: Option<String>,
    tags: Option<Vec<MlflowModelVersionTag>>,
    run_link: Option<String>,
    aliases: Option<Vec<Option<String>>>,
    model_id: Option<String>,
    model_params: Option<Vec<MlflowModelParam>>,
    model_metrics: Option<Vec<MlflowModelMetric>>,
    deployment_job_state: Option<MlflowModelVersionDeploymentJobState>,
}

impl Default for MlflowModelVersion {
    fn default() -> Self {
        Self {
            name: None,
            version: None,
            creation_timestamp: None,
            last_updated_timestamp: None,
            user_id: None,
            current_stage: None,
            description: None,
            source: None,
            run_id: None,
            status: None,
            status_message: None,
            tags: list(),
            run_link: None,
            aliases: list(),
            model_id: None,
            model_params: list(),
            model_metrics: list(),
            deployment_job_state: None,
        }
    }
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowFileInfo {
    path: Option<String>,
    is_dir: Option<bool>,
    file_size: Option<LongString>,
}

#[derive(SimpleObject, Deserialize)]
#[serde(default)]
pub struct MlflowListArtifactsResponse {
    root_uri: Option<String>,
    files: Option<Vec<MlflowFileInfo>>,
    next_page_token: Option<String>,
    api_error: Option<GqlApiError>,
}

impl Default for MlflowListArtifactsResponse {
    fn default() -> Self {
        Self {
            root_uri: None,
            files: list(),
            next_page_token: None,
            api_error: None,
        }
    }
}

#[derive(InputObject)]
pub struct MlflowListArtifactsInput {
    run_id: Option<String>,
    run_uuid: Option<String>,
    path: Option<String>,
    page_token: Option<String>,
}

#[derive(SimpleObject, Deserialize)]
#[serde(default)]
pub struct MlflowSearchModelVersionsResponse {
    model_versions: Option<Vec<MlflowModelVersion>>,
    next_page_token: Option<String>,
    api_error: Option<GqlApiError>,
}

impl Default for MlflowSearchModelVersionsResponse {
    fn default() -> Self {
        Self {
            model_versions: list(),
            next_page_token: None,
            api_error: None,
        }
    }
}

#[derive(InputObject)]
pub struct MlflowSearchModelVersionsInput {
    filter: Option<String>,
    max_results: Option<LongString>,
    order_by: Option<Vec<Option<String>>>,
    page_token: Option<String>,
}

#[derive(SimpleObject)]
pub struct Test {
    /// Echoes the input string
    output: Option<String>,
}

#[derive(SimpleObject)]
pub struct TestMutation {
    /// Echoes the input string
    output: Option<String>,
}

#[derive(SimpleObject, Deserialize)]
#[serde(default)]
pub struct MlflowSearchRunsResponse {
    runs: Option<Vec<MlflowRunExtension>>,
    next_page_token: Option<String>,
    api_error: Option<GqlApiError>,
}

impl Default for MlflowSearchRunsResponse {
    fn default() -> Self {
        Self {
            runs: list(),
            next_page_token: None,
            api_error: None,
        }
    }
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum MlflowViewType {
    ActiveOnly,
    DeletedOnly,
    All,
}

impl MlflowViewType {
    fn as_str(self) -> &'static str {
        match self {
            Self::ActiveOnly => "ACTIVE_ONLY",
            Self::DeletedOnly => "DELETED_ONLY",
            Self::All => "ALL",
        }
    }
}

#[derive(InputObject)]
pub struct MlflowSearchRunsInput {
    experiment_ids: Option<Vec<Option<String>>>,
    filter: Option<String>,
    #[graphql(default_with = "None")]
    run_view_type: Option<MlflowViewType>,
    max_results: Option<i32>,
    order_by: Option<Vec<Option<String>>>,
    page_token: Option<String>,
}

#[derive(SimpleObject, Deserialize, Default, Clone)]
#[serde(default)]
pub struct MlflowDatasetSummary {
    experiment_id: Option<String>,
    name: Option<String>,
    digest: Option<String>,
    context: Option<String>,
}

#[derive(SimpleObject, Deserialize)]
#[serde(default)]
pub struct MlflowSearchDatasetsResponse {
    dataset_summaries: Option<Vec<MlflowDatasetSummary>>,
    api_error: Option<GqlApiError>,
}

impl Default for MlflowSearchDatasetsResponse {
    fn default() -> Self {
        Self {
            dataset_summaries: list(),
            api_error: None,
        }
    }
}

#[derive(InputObject)]
pub struct MlflowSearchDatasetsInput {
    experiment_ids: Option<Vec<Option<String>>>,
}

// ---------------------------------------------------------------------------------------------
// Root types.

pub struct Query;

#[Object]
impl Query {
    async fn mlflow_get_experiment(
        &self,
        ctx: &Context<'_>,
        input: Option<MlflowGetExperimentInput>,
    ) -> Option<MlflowGetExperimentResponse> {
        let id = input.and_then(|i| i.experiment_id).unwrap_or_default();
        rest_get(ctx, "/experiments/get", &[("experiment_id", id)]).await
    }

    async fn mlflow_get_metric_history_bulk_interval(
        &self,
        ctx: &Context<'_>,
        input: Option<MlflowGetMetricHistoryBulkIntervalInput>,
    ) -> Option<MlflowGetMetricHistoryBulkIntervalResponse> {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(input) = input {
            for id in strings(&input.run_ids) {
                params.push(("run_ids", id));
            }
            push_opt(&mut params, "metric_key", input.metric_key);
            push_opt(&mut params, "start_step", input.start_step);
            push_opt(&mut params, "end_step", input.end_step);
            push_opt(&mut params, "max_results", input.max_results);
        }
        rest_get(ctx, "/metrics/get-history-bulk-interval", &params).await
    }

    async fn mlflow_get_run(
        &self,
        ctx: &Context<'_>,
        input: Option<MlflowGetRunInput>,
    ) -> Option<MlflowGetRunResponse> {
        let mut params = Vec::new();
        if let Some(input) = input {
            push_opt(&mut params, "run_id", input.run_id);
            push_opt(&mut params, "run_uuid", input.run_uuid);
        }
        rest_get(ctx, "/runs/get", &params).await
    }

    async fn mlflow_list_artifacts(
        &self,
        ctx: &Context<'_>,
        input: Option<MlflowListArtifactsInput>,
    ) -> Option<MlflowListArtifactsResponse> {
        let mut params = Vec::new();
        if let Some(input) = input {
            push_opt(&mut params, "run_id", input.run_id);
            push_opt(&mut params, "run_uuid", input.run_uuid);
            push_opt(&mut params, "path", input.path);
            push_opt(&mut params, "page_token", input.page_token);
        }
        rest_get(ctx, "/artifacts/list", &params).await
    }

    async fn mlflow_search_model_versions(
        &self,
        ctx: &Context<'_>,
        input: Option<MlflowSearchModelVersionsInput>,
    ) -> Option<MlflowSearchModelVersionsResponse> {
        let mut params = Vec::new();
        if let Some(input) = input {
            push_opt(&mut params, "filter", input.filter);
            push_opt(&mut params, "max_results", input.max_results.map(|m| m.0));
            for order in strings(&input.order_by) {
                params.push(("order_by", order));
            }
            push_opt(&mut params, "page_token", input.page_token);
        }
        rest_get(ctx, "/model-versions/search", &params).await
    }

    /// Simple echoing field
    async fn test(&self, input_string: Option<String>) -> Option<Test> {
        Some(Test { output: input_string })
    }

    async fn mlflow_search_runs(
        &self,
        ctx: &Context<'_>,
        input: Option<MlflowSearchRunsInput>,
    ) -> Option<MlflowSearchRunsResponse> {
        search_runs(ctx, input).await
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    async fn mlflow_search_datasets(
        &self,
        ctx: &Context<'_>,
        input: Option<MlflowSearchDatasetsInput>,
    ) -> Option<MlflowSearchDatasetsResponse> {
        let ids = input.map(|i| strings(&i.experiment_ids)).unwrap_or_default();
        rest_post(
            ctx,
            "/experiments/search-datasets",
            json!({ "experiment_ids": ids }),
        )
        .await
    }

    async fn mlflow_search_runs(
        &self,
        ctx: &Context<'_>,
        input: Option<MlflowSearchRunsInput>,
    ) -> Option<MlflowSearchRunsResponse> {
        search_runs(ctx, input).await
    }

    /// Simple echoing field
    async fn test_mutation(&self, input_string: Option<String>) -> Option<TestMutation> {
        Some(TestMutation { output: input_string })
    }
}

async fn search_runs(
    ctx: &Context<'_>,
    input: Option<MlflowSearchRunsInput>,
) -> Option<MlflowSearchRunsResponse> {
    let mut body = serde_json::Map::new();
    if let Some(input) = input {
        body.insert("experiment_ids".into(), json!(strings(&input.experiment_ids)));
        if let Some(filter) = input.filter {
            body.insert("filter".into(), json!(filter));
        }
        if let Some(view) = input.run_view_type {
            body.insert("run_view_type".into(), json!(view.as_str()));
        }
        if let Some(max) = input.max_results {
            body.insert("max_results".into(), json!(max));
        }
        body.insert("order_by".into(), json!(strings(&input.order_by)));
        if let Some(token) = input.page_token {
            body.insert("page_token".into(), json!(token));
        }
    }
    rest_post(ctx, "/runs/search", Value::Object(body)).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn schema_matches_upstream_sdl() {
        let ours = schema(Router::new()).sdl();
        let upstream = include_str!("schema.graphql");
        let norm = |s: &str| -> Vec<String> {
            let mut lines: Vec<String> = s
                .lines()
                .map(|l| l.trim().trim_end_matches(',').to_owned())
                .filter(|l| !l.is_empty() && !l.starts_with('"') && !l.starts_with('#'))
                .collect();
            lines.sort();
            lines
        };
        let ours = norm(&ours);
        let upstream = norm(upstream);
        let missing: Vec<_> = upstream.iter().filter(|l| !ours.contains(l)).collect();
        assert!(
            missing.is_empty(),
            "schema lines upstream has and we lack: {missing:#?}"
        );
    }

    #[test]
    fn safety_limits() {
        assert!(check_query_safety("{ test { output } }").is_ok());
        let many_roots = format!(
            "{{ {} }}",
            (0..11)
                .map(|i| format!("a{i}: test {{ output }}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(
            check_query_safety(&many_roots)
                .unwrap_err()
                .contains("root fields")
        );
        let many_aliases = format!(
            "{{ test {{ {} }} }}",
            (0..11)
                .map(|i| format!("o{i}: output"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(check_query_safety(&many_aliases).unwrap_err().contains("aliases"));
        // Fragments spreading each other 40 times over, 8 deep: 40^7 spreads if walked in full.
        let mut fan: Vec<String> = (0..7)
            .map(|i| {
                format!(
                    "fragment F{i} on Query {{ {} }}",
                    format!("...F{} ", i + 1).repeat(40)
                )
            })
            .collect();
        fan.push("fragment F7 on Query { test { output } } { ...F0 }".to_owned());
        let started = std::time::Instant::now();
        assert!(check_query_safety(&fan.join(" ")).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let wide = format!("{{ test {{ {} }} }}", "output ".repeat(MAX_SELECTIONS));
        assert!(check_query_safety(&wide).unwrap_err().contains("selections"));
        let long = format!(
            "{{ test(inputString: \"{}\") {{ output }} }}",
            "x".repeat(MAX_QUERY_BYTES)
        );
        assert!(check_query_safety(&long).unwrap_err().contains("bytes"));
        // Garbage is left to the executor, which answers a parse error.
        assert!(check_query_safety("{ {{").is_ok());
    }

    #[test]
    fn long_strings_and_finite_floats_from_mlflow_json() {
        let m: MlflowMetricExtension = serde_json::from_value(
            json!({"key": "k", "value": "NaN", "timestamp": 1700000000000_i64, "step": 3}),
        )
        .unwrap();
        assert_eq!(m.value, None);
        assert_eq!(m.timestamp, Some(LongString("1700000000000".into())));
        let m: MlflowMetricExtension = serde_json::from_value(json!({"value": 0.5})).unwrap();
        assert_eq!(m.value, Some(0.5));
        let m: MlflowMetricExtension = serde_json::from_value(json!({"value": "Infinity"})).unwrap();
        assert_eq!(m.value, None);
    }
}
