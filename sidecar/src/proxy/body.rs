//! Body wrappers of the data path. Both stream frame by frame; neither buffers anything except the
//! size-capped capture tap of a sampled request.
//!
//! [`RequestBody`] counts the client's bytes, enforces the body limit and the body timeout (on the
//! time spent waiting for the client, [`ClientWait`]) and observes the request size.
//! [`ResponseBody`] carries the request's [`RequestGuard`]: latency, in-flight and response size are
//! recorded when the last frame is handed to the connection (or when the body is dropped early), so a
//! client that has read the whole response also sees the metrics updated.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use super::capture::{Sampled, Tap};
use super::forward::Shared;
use super::metrics::{ErrorReason, WorkerMetrics};
use super::upstream::Lease;

/// Why the request body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("reading the request body from the client failed")]
    Read(#[source] hyper::Error),
    #[error("the client kept its request body waiting for more than {timeout:?}")]
    TimedOut { timeout: Duration },
}

// === impl ClientWait ===

/// How long a request has waited for its client's body bytes: the body timeout is measured on it,
/// and the request timeout leaves it out, so a slow client is never counted as a slow model.
///
/// Both sides run on one worker thread; the atomics only make it `Sync`.
#[derive(Debug)]
pub(crate) struct ClientWait {
    origin: Instant,
    /// Finished waits, nanoseconds.
    waited: AtomicU64,
    /// When the current wait began, in nanoseconds after `origin` plus one; 0 while not waiting.
    since: AtomicU64,
}

impl ClientWait {
    pub(crate) fn new() -> Self {
        ClientWait {
            origin: Instant::now(),
            waited: AtomicU64::new(0),
            since: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Time spent waiting up to `now`, the current wait included.
    pub(crate) fn total(&self, now: Instant) -> Duration {
        let waited = self.waited.load(Ordering::Relaxed);
        let current = match self.since.load(Ordering::Relaxed) {
            0 => 0,
            since => self.nanos(now).saturating_sub(since - 1),
        };
        Duration::from_nanos(waited.saturating_add(current))
    }

    fn begin(&self, now: Instant) {
        if self.since.load(Ordering::Relaxed) == 0 {
            self.since
                .store(self.nanos(now).saturating_add(1), Ordering::Relaxed);
        }
    }

    fn end(&self) {
        if self.since.load(Ordering::Relaxed) == 0 {
            return;
        }
        let since = self.since.swap(0, Ordering::Relaxed);
        let current = self.nanos(Instant::now()).saturating_sub(since - 1);
        self.waited.fetch_add(current, Ordering::Relaxed);
    }
}

// === impl RequestBody ===

/// The client's request body on its way to the upstream.
pub struct RequestBody {
    inner: Incoming,
    read: u64,
    limit: u64,
    metrics: Arc<WorkerMetrics>,
    tap: Option<(Arc<Sampled>, Tap)>,
    /// The body timeout and the clock it runs on; `None` for a body that was over with its head.
    wait: Option<(Arc<ClientWait>, Duration)>,
    /// Wakes the body when the timeout passes during a wait for the client.
    timer: Option<Pin<Box<Sleep>>>,
}

impl RequestBody {
    pub(crate) fn new(
        inner: Incoming,
        limit: u64,
        metrics: Arc<WorkerMetrics>,
        tap: Option<(Arc<Sampled>, Tap)>,
        wait: Option<(Arc<ClientWait>, Duration)>,
    ) -> Self {
        RequestBody {
            inner,
            read: 0,
            limit,
            metrics,
            tap,
            wait,
            timer: None,
        }
    }

    /// The client has not sent the next bytes yet: pending, or the timeout error once the wait
    /// adds up to more than the body timeout.
    fn wait_for_client(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let Some((wait, timeout)) = &self.wait else {
            return Poll::Pending;
        };
        let now = Instant::now();
        wait.begin(now);
        let left = timeout.saturating_sub(wait.total(now));
        if !left.is_zero() {
            let deadline = tokio::time::Instant::from_std(now + left);
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.tap = None;
        Poll::Ready(Some(Err(RequestBodyError::TimedOut { timeout: *timeout })))
    }

    /// Hands the captured request payload to the response side.
    fn finish_tap(&mut self) {
        if let Some((sampled, tap)) = self.tap.take() {
            sampled.set_request(tap.finish());
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some((wait, _)) = &this.wait {
            match polled {
                Poll::Pending => return this.wait_for_client(cx),
                Poll::Ready(_) => wait.end(),
            }
        }
        match ready!(polled) {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                    if this.read > this.limit {
                        this.tap = None;
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge { limit: this.limit })));
                    }
                    if let Some((_, tap)) = &mut this.tap {
                        tap.push(data);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish_tap();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => {
                this.tap = None;
                Poll::Ready(Some(Err(RequestBodyError::Read(err))))
            }
            None => {
                this.finish_tap();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        // An empty body is never polled: it ends here.
        if self.inner.is_end_stream() {
            self.finish_tap();
        }
        self.metrics.request_size(self.read);
    }
}

// === impl RequestGuard ===

/// Lives from a request's arrival to the end of its response: holds the in-flight gauge up and
/// records the latency when dropped.
pub(crate) struct RequestGuard {
    pub(crate) shared: Arc<Shared>,
    start: Instant,
}

impl RequestGuard {
    pub(crate) fn start(shared: Arc<Shared>) -> Self {
        shared.metrics.request_started();
        RequestGuard {
            shared,
            start: Instant::now(),
        }
    }

    /// Counts the request once its status is known.
    pub(crate) fn count(&self, error: Option<ErrorReason>) {
        self.shared.metrics.answered(error);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.shared.metrics.request_finished(self.start.elapsed());
    }
}

// === impl ResponseBody ===

/// The body sent back to the client: the upstream's, streamed, or a small local error body.
pub struct ResponseBody {
    kind: Kind,
    written: u64,
    finish: Option<Finish>,
}

enum Kind {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

struct Finish {
    guard: RequestGuard,
    /// The upstream connection, back to the pool once the response is read to the end.
    lease: Option<Lease>,
    /// Whether a failure of the upstream body still has to be counted (not when the status already
    /// counted as an error).
    count_body_error: bool,
    capture: Option<(Arc<Sampled>, Tap)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    UpstreamFailed,
    Abandoned,
}

impl ResponseBody {
    pub(crate) fn upstream(
        inner: Incoming,
        guard: RequestGuard,
        lease: Lease,
        count_body_error: bool,
        capture: Option<(Arc<Sampled>, Tap)>,
    ) -> Self {
        ResponseBody {
            kind: Kind::Upstream(inner),
            written: 0,
            finish: Some(Finish {
                guard,
                lease: Some(lease),
                count_body_error,
                capture,
            }),
        }
    }

    pub(crate) fn local(body: Bytes, guard: RequestGuard) -> Self {
        ResponseBody {
            kind: Kind::Local(Some(body).filter(|b| !b.is_empty())),
            written: 0,
            finish: Some(Finish {
                guard,
                lease: None,
                count_body_error: false,
                capture: None,
            }),
        }
    }

    fn account(&mut self, data: &Bytes) {
        self.written += data.len() as u64;
        if let Some(Finish {
            capture: Some((_, tap)),
            ..
        }) = &mut self.finish
        {
            tap.push(data);
        }
    }

    fn finish(&mut self, end: End) {
        let Some(finish) = self.finish.take() else {
            return;
        };
        let shared = &finish.guard.shared;
        shared.metrics.response_size(self.written);
        match end {
            End::UpstreamFailed if finish.count_body_error => {
                shared.metrics.error(ErrorReason::UpstreamUnavailable);
            }
            End::Complete => {
                if let Some(lease) = finish.lease {
                    lease.release();
                }
                if let (Some((sampled, tap)), Some(capturer)) = (finish.capture, &shared.capture) {
                    capturer.submit(&sampled, tap.finish());
                }
            }
            End::UpstreamFailed | End::Abandoned => {}
        }
        // `finish.guard` drops here: latency and in-flight.
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Local(data) => Ok(data.take().map(Frame::data)),
            Kind::Upstream(inner) => match ready!(Pin::new(inner).poll_frame(cx)) {
                Some(Ok(frame)) => Ok(Some(frame)),
                Some(Err(err)) => Err(err),
                None => Ok(None),
            },
        };
        match polled {
            Ok(Some(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.account(data);
                }
                if this.is_end_stream() {
                    this.finish(End::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Ok(None) => {
                this.finish(End::Complete);
                Poll::Ready(None)
            }
            Err(err) => {
                this.finish(End::UpstreamFailed);
                Poll::Ready(Some(Err(err)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(inner) => inner.is_end_stream(),
            Kind::Local(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(inner) => inner.size_hint(),
            Kind::Local(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // An empty body is never polled; any other body dropped early was abandoned by the client.
        let end = if self.is_end_stream() {
            End::Complete
        } else {
            End::Abandoned
        };
        self.finish(end);
    }
}
