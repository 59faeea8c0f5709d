//! Group commit: posts arriving at this database node together are written together.
//!
//! Every `post_message` call queues its post and waits. A committer task takes whatever has
//! queued (up to [`MAX_BATCH`]) and writes it with a fixed number of statements whatever its size
//! (see `store::post_batch`: on PostgreSQL one read and one guarded write, on SQLite one
//! transaction), then answers each caller. Nothing waits on a timer:
//! an idle node commits a lone post at once, and under load the posts that arrive while a batch
//! commits form the next one, so the commit cost is shared exactly when it matters. Every post is
//! acknowledged only after the commit that contains it.
//!
//! A batch that fails as a whole is retried post by post, so a batch never changes what a post
//! means. Queue and batch sizes are bounded; a full queue makes callers wait (backpressure), and
//! their call deadlines bound the wait.

use std::sync::Arc;

use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};
use switchboard::Node;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::service::{publish, tail};
use crate::store::{Backend, NewPost, PostOutcome, Store, StoreError, Turn};

/// The most posts one transaction carries.
pub(crate) const MAX_BATCH: usize = 128;

/// Posts waiting for a committer, at most.
const QUEUE: usize = 4 * MAX_BATCH;

type Answer = oneshot::Sender<Result<PostOutcome, StoreError>>;

/// The queue in front of the committers.
#[derive(Debug, Clone)]
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<(NewPost, Answer)>,
}

impl GroupCommit {
    /// Starts the committers of `store`: two for PostgreSQL, so one batch is read while the
    /// other writes; one for SQLite, which has a single writer anyway.
    pub(crate) fn start(store: Store, node: Node) -> Self {
        let metrics = CommitMetrics::register(node.metrics().registry());
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let committers = match store.backend() {
            Backend::Postgres => 2,
            Backend::Sqlite => 1,
        };
        for _ in 0..committers {
            tokio::spawn(commit_loop(
                store.clone(),
                node.clone(),
                receiver.clone(),
                metrics.clone(),
            ));
        }
        Self { queue }
    }

    /// Posts `post` in the next batch and returns its outcome once committed.
    pub(crate) async fn post(&self, post: NewPost) -> Result<PostOutcome, StoreError> {
        let (answer, outcome) = oneshot::channel();
        self.queue
            .send((post, answer))
            .await
            .map_err(|_| StoreError::rejected("unavailable", "the database node is stopping"))?;
        outcome
            .await
            .map_err(|_| StoreError::rejected("unavailable", "the post was not committed"))?
    }
}

/// How group commit is doing, on the node's `/metrics`.
#[derive(Debug, Clone)]
struct CommitMetrics {
    /// Posts per committed batch.
    batch_posts: Histogram,
    /// Batches rolled back and posted one by one.
    fallbacks: IntCounter,
}

impl CommitMetrics {
    fn register(registry: &Registry) -> Self {
        let batch_posts = Histogram::with_opts(
            HistogramOpts::new(
                "group_commit_batch_posts",
                "Posts written per group-commit transaction",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        )
        .expect("metric");
        let fallbacks = IntCounter::new(
            "group_commit_fallbacks_total",
            "Batches rolled back and posted one by one",
        )
        .expect("metric");
        // Registering twice (a second service on one node) keeps the first registration.
        let _ = registry.register(Box::new(batch_posts.clone()));
        let _ = registry.register(Box::new(fallbacks.clone()));
        Self {
            batch_posts,
            fallbacks,
        }
    }
}

/// Takes batches off the queue until every sender is gone.
async fn commit_loop(
    store: Store,
    node: Node,
    receiver: Arc<Mutex<mpsc::Receiver<(NewPost, Answer)>>>,
    metrics: CommitMetrics,
) {
    loop {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // One committer gathers at a time, so batches are not split between them, and it keeps
        // the turn until its batch's write is next in line (see `store::Turn`).
        let mut turn = receiver.clone().lock_owned().await;
        if turn.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        metrics.batch_posts.observe(batch.len() as f64);
        commit(&store, &node, batch, Box::new(turn), &metrics).await;
    }
}

/// Writes one batch, publishes its events, answers its callers, and shows the posts' activity
/// entries (stored with them) to the log's live tail.
///
/// The committer publishes, not the callers' handlers, and the store hands it the events only
/// once the batches before it have published theirs: live clients that see events out of order
/// take it for a gap and read the event log to fill it.
async fn commit(
    store: &Store,
    node: &Node,
    batch: Vec<(NewPost, Answer)>,
    turn: Turn,
    metrics: &CommitMetrics,
) {
    let (posts, answers): (Vec<NewPost>, Vec<Answer>) = batch.into_iter().unzip();
    let origin = node.name();
    let mut posted = Vec::new();
    match store
        .post_messages(&posts, origin, turn, &|event| publish(node, event))
        .await
    {
        Ok(outcomes) => {
            for (answer, outcome) in answers.into_iter().zip(outcomes) {
                if let Ok(PostOutcome {
                    activity: Some(entry),
                    ..
                }) = &outcome
                {
                    posted.push(entry.clone());
                }
                // A caller that stopped waiting still had its post committed; a retry with its
                // idempotency key gets the same answer.
                let _ = answer.send(outcome);
            }
        }
        Err(error) => {
            metrics.fallbacks.inc();
            tracing::info!(%error, posts = posts.len(), "batch not committed; posting one by one");
            for (answer, post) in answers.into_iter().zip(posts) {
                let outcome = store
                    .post_message(origin, post.user_id, post.room_id, &post.body, &post.key)
                    .await;
                if let Ok(PostOutcome {
                    event: Some(event),
                    activity,
                    ..
                }) = &outcome
                {
                    publish(node, event);
                    posted.extend(activity.clone());
                }
                let _ = answer.send(outcome);
            }
        }
    }
    tail(node, posted);
}
