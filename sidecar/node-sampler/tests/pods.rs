//! The pod watch against an in-process fake API server: only this node's pods are listed and
//! watched (`fieldSelector=spec.nodeName=…`), and the index follows list, add and delete.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers may fail loudly

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mlkube_node_sampler::PodIndex;
use mlkube_node_sampler::pods::watch_pods;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type Body = BoxBody<Bytes, Infallible>;

fn pod(name: &str, uid: &str, run_id: Option<&str>) -> Value {
    let mut annotations = json!({});
    if let Some(run_id) = run_id {
        annotations["mlkube.io/run-id"] = json!(run_id);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "uid": uid, "resourceVersion": "10", "annotations": annotations},
        "spec": {"nodeName": "gpu-node-1", "containers": [{"name": "trainer"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "trainer", "containerID": format!("containerd://{uid}-c"), "image": "x", "imageID": "", "ready": true, "restartCount": 0}
        ]}
    })
}

struct FakeApi {
    url: String,
    queries: Arc<Mutex<Vec<String>>>,
    /// Feeds events into the (one) open watch.
    events: mpsc::UnboundedSender<Value>,
}

async fn fake_api() -> FakeApi {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let queries = Arc::new(Mutex::new(Vec::new()));
    let (events, rx) = mpsc::unbounded_channel::<Value>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let seen = Arc::clone(&queries);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (seen, rx) = (Arc::clone(&seen), Arc::clone(&rx));
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let (seen, rx) = (Arc::clone(&seen), Arc::clone(&rx));
                    async move {
                        assert_eq!(request.uri().path(), "/api/v1/pods");
                        let query = request.uri().query().unwrap_or_default().to_owned();
                        seen.lock().unwrap().push(query.clone());
                        let body: Body = if query.contains("watch=true") {
                            // Events as they are sent, one JSON object per line; the stream stays open.
                            let frames = futures_util::stream::unfold(rx, |rx| async move {
                                let event = rx.lock().await.recv().await?;
                                let line = Bytes::from(format!("{event}\n"));
                                Some((Ok::<_, Infallible>(Frame::data(line)), rx))
                            });
                            StreamBody::new(frames).boxed()
                        } else {
                            let list = json!({
                                "apiVersion": "v1", "kind": "PodList",
                                "metadata": {"resourceVersion": "10"},
                                "items": [pod("train-0", "uid-0", Some("run-0")), pod("web-1", "uid-1", None)]
                            });
                            Full::new(Bytes::from(list.to_string())).boxed()
                        };
                        let mut response = Response::new(body);
                        response
                            .headers_mut()
                            .insert(http::header::CONTENT_TYPE, "application/json".parse().unwrap());
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    FakeApi { url, queries, events }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_watch_lists_and_follows_only_this_nodes_pods() {
    let api = fake_api().await;
    let config = kube::Config::new(api.url.parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let index = PodIndex::new();
    let shutdown = CancellationToken::new();
    let watch = tokio::spawn(watch_pods(
        client,
        "gpu-node-1".to_owned(),
        index.clone(),
        shutdown.clone(),
    ));

    eventually("the initial list", || index.len() == 2).await;
    let train = index.get("uid-0").unwrap();
    assert_eq!((train.namespace.as_str(), train.name.as_str()), ("ml", "train-0"));
    assert_eq!(
        train.containers.get("uid-0-c").map(String::as_str),
        Some("trainer")
    );
    assert_eq!(train.run.unwrap().run_id, "run-0");
    assert_eq!(index.running_with_runs().len(), 1);

    eventually("the watch to open", || {
        api.queries
            .lock()
            .unwrap()
            .iter()
            .any(|q| q.contains("watch=true"))
    })
    .await;
    api.events
        .send(json!({"type": "ADDED", "object": pod("train-1", "uid-2", Some("run-2"))}))
        .unwrap();
    api.events
        .send(json!({"type": "DELETED", "object": pod("train-0", "uid-0", Some("run-0"))}))
        .unwrap();
    eventually("the add and the delete", || {
        index.get("uid-2").is_some() && index.get("uid-0").is_none()
    })
    .await;
    assert_eq!(index.len(), 2);

    shutdown.cancel();
    watch.await.unwrap();
    let queries = api.queries.lock().unwrap().clone();
    assert!(queries.len() >= 2, "{queries:?}");
    for query in &queries {
        assert!(
            query.contains("fieldSelector=spec.nodeName%3Dgpu-node-1"),
            "every list and watch is limited to this node: {query}"
        );
    }
}
